# SSM Parameter Store entries holding edgepush's secrets, all SecureString.
# The functions get the parameter *names* in their environment and read the
# values at cold start (their IAM roles may read exactly their own
# parameters); the edge node tasks get the values injected by ECS (`secrets`
# of the container definition).
#
# Secrets nobody supplied are generated here; they live in the Terraform
# state like every parameter value, so keep the state encrypted (S3 backend
# with SSE) and access-controlled. Rotate one with, for example,
#   terraform apply -replace=module.params.random_password.jwt_secret

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
  }
}

resource "random_password" "jwt_secret" {
  length  = 48
  special = false
}

resource "random_password" "push_secret" {
  length  = 40
  special = false
}

resource "random_password" "api_key" {
  length  = 40
  special = false
}

locals {
  jwt_secret             = var.jwt_secret != null ? var.jwt_secret : random_password.jwt_secret.result
  push_secret_access_key = var.push_secret_access_key != null ? var.push_secret_access_key : random_password.push_secret.result
  api_keys               = var.api_keys != null ? var.api_keys : { default = random_password.api_key.result }
  # The format collect parses: `name:key,name2:key2`.
  api_keys_value = join(",", [for source, key in local.api_keys : "${source}:${key}"])

  values = {
    "jwt-secret"             = local.jwt_secret
    "jwt-public-keys"        = var.jwt_public_keys_pem
    "push-access-key-id"     = var.push_access_key_id
    "push-secret-access-key" = local.push_secret_access_key
    "api-keys"               = local.api_keys_value
    "mongodb-uri"            = var.mongodb_uri
  }
  # Which parameters exist is decided by non-secret inputs only, so that
  # for_each never sees a sensitive value.
  keys = setunion(
    ["jwt-secret", "push-access-key-id", "push-secret-access-key", "api-keys", "mongodb-uri"],
    var.jwt_public_keys_pem != null ? ["jwt-public-keys"] : [],
  )
}

resource "aws_ssm_parameter" "secure" {
  for_each = local.keys

  name        = "${var.prefix}/${each.key}"
  description = "edgepush ${each.key}"
  type        = "SecureString"
  # Standard up to 4 KB, Advanced above (a large JWK set).
  tier   = "Intelligent-Tiering"
  key_id = var.kms_key_id
  value  = local.values[each.key]

  tags = var.tags
}
