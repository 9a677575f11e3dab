output "api_id" {
  description = "Id of the WebSocket API."
  value       = aws_apigatewayv2_api.this.id
}

output "execution_arn" {
  description = "Execution ARN of the WebSocket API (IAM: execute-api:ManageConnections)."
  value       = aws_apigatewayv2_api.this.execution_arn
}

output "stage_name" {
  description = "The stage clients connect to."
  value       = aws_apigatewayv2_stage.this.name
}

output "websocket_url" {
  description = "The URL clients connect to (wss://...)."
  value       = aws_apigatewayv2_stage.this.invoke_url
}

# Built from the API and the stage *name*, not the stage resource: the stage
# depends on the functions (through its routes), so a function setting that
# used this output would otherwise form a cycle.
output "management_endpoint" {
  description = "The @connections endpoint dispatch pushes to (https://<id>.execute-api.<region>.amazonaws.com/<stage>)."
  value       = "${replace(aws_apigatewayv2_api.this.api_endpoint, "wss://", "https://")}/${var.stage_name}"
}
