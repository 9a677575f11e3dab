output "configuration_endpoint" {
  description = "Host name of the cluster's configuration endpoint."
  value       = aws_elasticache_replication_group.this.configuration_endpoint_address
}

output "port" {
  description = "Redis port."
  value       = var.port
}

output "url" {
  description = "Redis URL for EDGEPUSH_REDIS_URL (rediss:// with transit encryption)."
  value       = "${var.transit_encryption_enabled ? "rediss" : "redis"}://${aws_elasticache_replication_group.this.configuration_endpoint_address}:${var.port}"
}

output "replication_group_id" {
  description = "Id of the replication group."
  value       = aws_elasticache_replication_group.this.id
}
