output "queue_url" {
  description = "URL of the hand-off queue (collect sends here)."
  value       = aws_sqs_queue.this.id
}

output "queue_arn" {
  description = "ARN of the hand-off queue."
  value       = aws_sqs_queue.this.arn
}

output "queue_name" {
  description = "Name of the hand-off queue."
  value       = aws_sqs_queue.this.name
}

output "dlq_url" {
  description = "URL of the dead-letter queue."
  value       = aws_sqs_queue.dlq.id
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}

output "event_source_mapping_uuid" {
  description = "UUID of the queue -> dispatch mapping, null when not created."
  value       = try(aws_lambda_event_source_mapping.dispatch[0].uuid, null)
}
