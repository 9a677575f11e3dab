variable "prefix" {
  description = "SSM path prefix of every parameter, starting with / and without a trailing /, e.g. \"/edgepush/prod\"."
  type        = string

  validation {
    condition     = can(regex("^/[A-Za-z0-9_.\\-/]*[A-Za-z0-9_.\\-]$", var.prefix))
    error_message = "prefix must start with / and must not end with /."
  }
}

variable "kms_key_id" {
  description = "KMS key (id, ARN or alias) that encrypts the SecureString parameters; null uses the AWS managed key alias/aws/ssm."
  type        = string
  default     = null
}

variable "jwt_secret" {
  description = "HS256 secret that client tokens are signed with (at least 16 bytes). null generates a random 48-character secret; read it back from SSM for the service that issues tokens."
  type        = string
  default     = null
  sensitive   = true
}

variable "jwt_public_keys_pem" {
  description = "RS256/ES256 public keys (PEM, one or more) that verify client tokens; null when tokens are HS256."
  type        = string
  default     = null
}

variable "push_access_key_id" {
  description = "Access key id of the internal push credential (SigV4, service execute-api) that dispatch signs with and edge nodes verify. Not an IAM key."
  type        = string
  default     = "edgepush-push"
}

variable "push_secret_access_key" {
  description = "Secret of the internal push credential; null generates a random 40-character secret."
  type        = string
  default     = null
  sensitive   = true
}

variable "api_keys" {
  description = "Collect API keys as a map of source name => key (callers send `Authorization: Bearer <key>`). null generates one key for the source \"default\"."
  type        = map(string)
  default     = null
  sensitive   = true
}

variable "mongodb_uri" {
  description = "MongoDB connection string (Atlas `mongodb+srv://...`, a replica set, or DocumentDB with `tls=true&retryWrites=false`)."
  type        = string
  sensitive   = true
}

variable "tags" {
  description = "Extra tags for every parameter."
  type        = map(string)
  default     = {}
}
