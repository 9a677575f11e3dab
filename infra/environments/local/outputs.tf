output "queue_url" {
  description = "URL of the hand-off queue in LocalStack."
  value       = module.queue.queue_url
}

output "dlq_url" {
  description = "URL of the dead-letter queue in LocalStack."
  value       = module.queue.dlq_url
}

output "ssm_parameter_names" {
  description = "The SSM parameters created in LocalStack, by key."
  value       = module.params.names
}

output "function_names" {
  description = "Lambda function names (empty unless enable_functions)."
  value       = var.enable_functions ? module.functions[0].function_names : {}
}
