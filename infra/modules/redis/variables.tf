variable "name" {
  description = "Replication group id (also names the subnet group), e.g. \"edgepush-prod\"."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the cache nodes, in at least two zones."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the cache nodes (the network module's redis group)."
  type        = list(string)
}

variable "engine_version" {
  description = "Redis OSS engine version."
  type        = string
  default     = "7.1"
}

variable "parameter_group_name" {
  description = "Parameter group; must be a `cluster.on` family for cluster mode."
  type        = string
  default     = "default.redis7.cluster.on"
}

variable "node_type" {
  description = "Cache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "num_node_groups" {
  description = "Shards (cluster mode enabled). Routes are keyed with one hash tag per user, so they spread over shards."
  type        = number
  default     = 2
}

variable "replicas_per_node_group" {
  description = "Replicas per shard (1-5): cluster mode needs automatic failover, which needs a replica to promote."
  type        = number
  default     = 1

  validation {
    condition     = var.replicas_per_node_group >= 1 && var.replicas_per_node_group <= 5
    error_message = "replicas_per_node_group must be between 1 and 5."
  }
}

variable "port" {
  description = "Redis port."
  type        = number
  default     = 6379
}

variable "transit_encryption_enabled" {
  description = "TLS between clients and Redis (URL scheme rediss://). The Rust client must be built with a TLS feature of the redis crate."
  type        = bool
  default     = true
}

variable "snapshot_retention_limit" {
  description = "Days of automatic snapshots; routes are soft state rebuilt by reconnecting clients, so 0 (none) is acceptable."
  type        = number
  default     = 0
}

variable "apply_immediately" {
  description = "Apply modifications at once instead of in the maintenance window."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags for every resource of this module."
  type        = map(string)
  default     = {}
}
