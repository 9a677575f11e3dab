variable "name" {
  description = "Name of the WebSocket API."
  type        = string
}

variable "stage_name" {
  description = "Stage name; clients connect to wss://<id>.execute-api.<region>.amazonaws.com/<stage_name>."
  type        = string
  default     = "prod"
}

variable "auth_function_name" {
  description = "Name of the auth function, the $connect REQUEST authorizer."
  type        = string
}

variable "auth_invoke_arn" {
  description = "Invoke ARN of the auth function."
  type        = string
}

variable "connections_function_name" {
  description = "Name of the connections function ($connect, $disconnect, $default)."
  type        = string
}

variable "connections_function_arn" {
  description = "ARN of the connections function (the target of the sweep schedule)."
  type        = string
}

variable "sweep_schedule" {
  description = "How often the connections function sweeps expired and stale connections (an EventBridge schedule expression)."
  type        = string
  default     = "rate(1 minute)"
}

variable "connections_invoke_arn" {
  description = "Invoke ARN of the connections function."
  type        = string
}

variable "identity_sources" {
  description = "Where the authorizer finds the token. API Gateway refuses (401) a $connect that lacks any of them without calling auth. Browsers cannot set headers on WebSockets, hence the query string by default (`?token=<jwt>`)."
  type        = list(string)
  default     = ["route.request.querystring.token"]
}

variable "throttling_burst_limit" {
  description = "Stage-wide burst limit (messages and connects)."
  type        = number
  default     = 5000
}

variable "throttling_rate_limit" {
  description = "Stage-wide steady rate limit (per second)."
  type        = number
  default     = 2000
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
