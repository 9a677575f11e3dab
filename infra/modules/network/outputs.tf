output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "The VPC's IPv4 CIDR."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "Public subnets (NLB, NAT gateways), one per zone."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnets (functions, edge nodes, ElastiCache), one per zone."
  value       = aws_subnet.private[*].id
}

output "nlb_security_group_id" {
  description = "Security group of the edge nodes' NLB."
  value       = aws_security_group.nlb.id
}

output "edge_security_group_id" {
  description = "Security group of the edge node tasks."
  value       = aws_security_group.edge.id
}

output "functions_security_group_id" {
  description = "Security group of the Lambda functions attached to the VPC."
  value       = aws_security_group.functions.id
}

output "redis_security_group_id" {
  description = "Security group of the ElastiCache replication group."
  value       = aws_security_group.redis.id
}

output "nat_public_ips" {
  description = "Public IPs of the NAT gateways: allow-list them in MongoDB Atlas."
  value       = aws_eip.nat[*].public_ip
}
