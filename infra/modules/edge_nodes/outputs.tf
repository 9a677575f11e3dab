output "nlb_dns_name" {
  description = "DNS name of the NLB clients connect to (point a CNAME/alias at it)."
  value       = aws_lb.this.dns_name
}

output "nlb_zone_id" {
  description = "Hosted zone of the NLB, for a Route 53 alias record."
  value       = aws_lb.this.zone_id
}

output "nlb_arn" {
  description = "ARN of the NLB."
  value       = aws_lb.this.arn
}

output "target_group_arn" {
  description = "ARN of the WebSocket target group."
  value       = aws_lb_target_group.ws.arn
}

output "websocket_url" {
  description = "Client URL through the NLB: wss:// on 443 with a certificate, else ws:// on the first TCP listener."
  value       = var.certificate_arn != null ? "wss://${aws_lb.this.dns_name}/ws" : "ws://${aws_lb.this.dns_name}:${var.tcp_listener_ports[0]}/ws"
}

output "cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "ECS service name."
  value       = aws_ecs_service.this.name
}

output "log_group_name" {
  description = "CloudWatch log group of the nodes."
  value       = aws_cloudwatch_log_group.this.name
}

output "stop_timeout_seconds" {
  description = "The container's stopTimeout (SIGTERM to SIGKILL)."
  value       = local.stop_timeout
}
