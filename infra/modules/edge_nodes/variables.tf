variable "name" {
  description = "Name prefix of the cluster, service, NLB and target group (NLB and target group names are cut to 32 characters)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC of the target group."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the NLB (public ones for an internet-facing NLB)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the edge node tasks."
  type        = list(string)
}

variable "nlb_security_group_id" {
  description = "Security group of the NLB (network module)."
  type        = string
}

variable "edge_security_group_id" {
  description = "Security group of the tasks (network module)."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse to delete the NLB (a `terraform destroy` fails until this is false and applied)."
  type        = bool
  default     = true
}

variable "internal" {
  description = "Make the NLB internal (clients inside the VPC or behind another proxy) instead of internet-facing."
  type        = bool
  default     = false
}

variable "container_image" {
  description = "The edge node image (for example <account>.dkr.ecr.<region>.amazonaws.com/edgepush/edge-node:<tag>). It runs `edge-node serve` and needs /bin/sh for the push URL discovery."
  type        = string
}

variable "ecr_repository_arns" {
  description = "ECR repositories the tasks may pull from; empty allows any repository of the account (the image may also live in a public registry)."
  type        = list(string)
  default     = []
}

variable "cpu_architecture" {
  description = "CPU architecture of the image: \"ARM64\" (Graviton) or \"X86_64\"."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["ARM64", "X86_64"], var.cpu_architecture)
    error_message = "cpu_architecture must be ARM64 or X86_64."
  }
}

variable "cpu" {
  description = "Task CPU units (1024 = 1 vCPU)."
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Task memory in MiB."
  type        = number
  default     = 2048
}

variable "desired_count" {
  description = "Number of edge node tasks; at least 2 for availability."
  type        = number
  default     = 2
}

variable "ws_port" {
  description = "Client WebSocket port in the container (EDGEPUSH_WS_ADDR)."
  type        = number
  default     = 9001
}

variable "push_port" {
  description = "Push API port in the container (EDGEPUSH_PUSH_ADDR); the NLB health-checks GET /healthz there."
  type        = number
  default     = 9101
}

variable "drain_timeout_seconds" {
  description = "The NLB target group's deregistration delay. ECS stops a task only after it, so it bounds how long a scale-in or deployment waits; node_drain_timeout_ms must be shorter."
  type        = number
  default     = 30

  validation {
    condition     = var.drain_timeout_seconds >= 5 && var.drain_timeout_seconds <= 110
    error_message = "drain_timeout_seconds must be between 5 and 110 (Fargate's stopTimeout is at most 120 s)."
  }
}

variable "node_drain_timeout_ms" {
  description = "EDGEPUSH_DRAIN_TIMEOUT_MS: after SIGTERM the node closes its sockets with 1012 (reconnect elsewhere) and exits within this time. Must be shorter than drain_timeout_seconds; the container's stopTimeout is set above it."
  type        = number
  default     = 25000
}

variable "tcp_listener_ports" {
  description = "Plain TCP listeners (ws://) forwarding to the nodes' WebSocket port."
  type        = list(number)
  default     = [80]
}

variable "certificate_arn" {
  description = "ACM certificate for a TLS listener on 443 (wss://, TLS ends at the NLB); null: no TLS listener."
  type        = string
  default     = null
}

variable "tls_policy" {
  description = "Security policy of the TLS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "environment" {
  description = "Extra plain environment of the node (EDGEPUSH_* settings such as EDGEPUSH_REDIS_URL, EDGEPUSH_MONGODB_DATABASE, EDGEPUSH_JWT_ALG)."
  type        = map(string)
  default     = {}
}

variable "secrets" {
  description = "Environment variable => SSM parameter ARN, injected by ECS at task start (EDGEPUSH_JWT_SECRET, EDGEPUSH_MONGODB_URI, EDGEPUSH_PUSH_ACCESS_KEY_ID, EDGEPUSH_PUSH_SECRET_ACCESS_KEY)."
  type        = map(string)
  default     = {}
}

variable "ssm_kms_key_arn" {
  description = "Customer managed KMS key of the SecureString parameters; null for alias/aws/ssm."
  type        = string
  default     = null
}

variable "open_files_limit" {
  description = "nofile ulimit of the container: one socket per client connection."
  type        = number
  default     = 65536
}

variable "log_retention_days" {
  description = "Retention of the nodes' log group."
  type        = number
  default     = 30
}

variable "enable_container_insights" {
  description = "CloudWatch Container Insights on the cluster."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Extra tags for every resource of this module."
  type        = map(string)
  default     = {}
}
