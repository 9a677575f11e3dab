output "function_names" {
  description = "Function names by role (auth, collect, dispatch, connections)."
  value       = { for key, fn in aws_lambda_function.this : key => fn.function_name }
}

output "function_arns" {
  description = "Function ARNs by role."
  value       = { for key, fn in aws_lambda_function.this : key => fn.arn }
}

output "invoke_arns" {
  description = "Invoke ARNs by role, for API Gateway integrations and authorizers."
  value       = { for key, fn in aws_lambda_function.this : key => fn.invoke_arn }
}

output "role_arns" {
  description = "Execution role ARNs by role."
  value       = { for key, role in aws_iam_role.this : key => role.arn }
}

output "log_group_names" {
  description = "CloudWatch log groups by role."
  value       = { for key, group in aws_cloudwatch_log_group.this : key => group.name }
}

output "dispatch_function_arn" {
  description = "ARN of dispatch, for the queue's event source mapping. Available once dispatch's role may consume the queue."
  value       = aws_lambda_function.this["dispatch"].arn
  depends_on  = [aws_iam_role_policy.this]
}
