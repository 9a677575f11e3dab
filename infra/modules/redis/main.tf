# ElastiCache for Redis OSS in cluster mode (sharded, Multi-AZ, automatic
# failover): the route store and the node directory.
#
# Clients connect to the configuration endpoint with a cluster-aware client
# (MOVED/ASK redirects); every key of one user carries the same hash tag, so
# a user's routes live in one slot.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
}

resource "aws_elasticache_subnet_group" "this" {
  name        = var.name
  description = "edgepush Redis"
  subnet_ids  = var.subnet_ids

  tags = var.tags
}

resource "aws_elasticache_replication_group" "this" {
  #checkov:skip=CKV_AWS_31:Transit encryption is on by default (redis_transit_encryption); no AUTH token: only the functions' and edge nodes' security groups reach the cluster, and a token would be one more secret in every component's EDGEPUSH_REDIS_URL.
  #checkov:skip=CKV_AWS_191:Encrypted at rest with the AWS-managed key (at_rest_encryption_enabled); routes and liveness are not sensitive enough to need a customer-managed key.
  replication_group_id = var.name
  description          = "edgepush routes and node liveness"

  engine               = "redis"
  engine_version       = var.engine_version
  node_type            = var.node_type
  port                 = var.port
  parameter_group_name = var.parameter_group_name

  # Cluster mode enabled.
  num_node_groups            = var.num_node_groups
  replicas_per_node_group    = var.replicas_per_node_group
  automatic_failover_enabled = true
  multi_az_enabled           = true

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = var.security_group_ids

  at_rest_encryption_enabled = true
  transit_encryption_enabled = var.transit_encryption_enabled

  snapshot_retention_limit = var.snapshot_retention_limit
  apply_immediately        = var.apply_immediately

  tags = var.tags
}
