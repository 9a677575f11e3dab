output "names" {
  description = "Parameter names by key (jwt-secret, push-access-key-id, push-secret-access-key, api-keys, mongodb-uri, and jwt-public-keys when set)."
  value       = { for key, param in aws_ssm_parameter.secure : key => param.name }
}

output "arns" {
  description = "Parameter ARNs by key, for IAM policies and ECS `secrets`."
  value       = { for key, param in aws_ssm_parameter.secure : key => param.arn }
}

output "kms_key_id" {
  description = "The KMS key of the SecureString parameters (null: alias/aws/ssm)."
  value       = var.kms_key_id
}
