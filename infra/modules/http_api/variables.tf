variable "name" {
  description = "Name of the HTTP API."
  type        = string
}

variable "collect_function_name" {
  description = "Name of the collect function (for the invoke permission)."
  type        = string
}

variable "collect_invoke_arn" {
  description = "Invoke ARN of the collect function."
  type        = string
}

variable "routes" {
  description = "Route keys served by collect. The API keys are checked by collect itself (`Authorization: Bearer <key>`)."
  type        = list(string)
  default     = ["POST /v1/messages"]
}

variable "authorization_type" {
  description = "Route authorization: \"NONE\" (collect checks its API keys) or \"AWS_IAM\" (callers sign with SigV4 as well)."
  type        = string
  default     = "NONE"

  validation {
    condition     = contains(["NONE", "AWS_IAM"], var.authorization_type)
    error_message = "authorization_type must be NONE or AWS_IAM."
  }
}

variable "throttling_burst_limit" {
  description = "Stage-wide burst limit (requests)."
  type        = number
  default     = 2000
}

variable "throttling_rate_limit" {
  description = "Stage-wide steady rate limit (requests per second)."
  type        = number
  default     = 1000
}

variable "log_retention_days" {
  description = "Retention of the access log group."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Extra tags for every resource of this module."
  type        = map(string)
  default     = {}
}
