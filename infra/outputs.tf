output "collect_url" {
  description = "POST messages here: curl -H 'Authorization: Bearer <key>' -d '{\"to\":[\"alice\"],\"data\":{}}' <collect_url>."
  value       = module.http_api.collect_url
}

output "api_keys_parameter" {
  description = "SSM parameter holding the collect API keys (`name:key,...`)."
  value       = module.params.names["api-keys"]
}

output "jwt_secret_parameter" {
  description = "SSM parameter holding the HS256 token secret (for the service that issues client tokens)."
  value       = module.params.names["jwt-secret"]
}

output "ssm_parameter_names" {
  description = "Every SSM parameter of the stack, by key."
  value       = module.params.names
}

output "edge_websocket_url" {
  description = "Client WebSocket URL through the edge nodes' NLB (null without edge nodes)."
  value       = var.enable_edge_nodes ? module.edge_nodes[0].websocket_url : null
}

output "nlb_dns_name" {
  description = "DNS name of the edge nodes' NLB, for a CNAME or Route 53 alias (null without edge nodes)."
  value       = var.enable_edge_nodes ? module.edge_nodes[0].nlb_dns_name : null
}

output "websocket_url" {
  description = "Client URL of the API Gateway WebSocket API, wss://... (null unless enable_websocket_api)."
  value       = var.enable_websocket_api ? module.websocket_api[0].websocket_url : null
}

output "websocket_management_endpoint" {
  description = "The @connections endpoint of the WebSocket API (null unless enable_websocket_api)."
  value       = var.enable_websocket_api ? module.websocket_api[0].management_endpoint : null
}

output "queue_url" {
  description = "URL of the collect -> dispatch hand-off queue."
  value       = module.queue.queue_url
}

output "dlq_url" {
  description = "URL of the hand-off dead-letter queue."
  value       = module.queue.dlq_url
}

output "redis_url" {
  description = "Redis cluster URL (configuration endpoint)."
  value       = module.redis.url
}

output "function_names" {
  description = "Lambda function names by role."
  value       = module.functions.function_names
}

output "nat_public_ips" {
  description = "Egress IPs of the private subnets: allow-list them in MongoDB Atlas."
  value       = module.network.nat_public_ips
}
