variable "name" {
  description = "Queue name; the dead-letter queue is named \"<name>-dlq\"."
  type        = string
}

variable "visibility_timeout_seconds" {
  description = "How long a received batch stays invisible. AWS advises at least six times the dispatch function's timeout, so that a retried invocation never races the first one."
  type        = number
  default     = 180
}

variable "message_retention_seconds" {
  description = "How long an undelivered hand-off stays in the queue (messages are already in MongoDB; clients also catch up on resume)."
  type        = number
  default     = 345600 # 4 days
}

variable "dlq_message_retention_seconds" {
  description = "How long failed hand-offs stay in the dead-letter queue for inspection and redrive."
  type        = number
  default     = 1209600 # 14 days, the maximum
}

variable "max_receive_count" {
  description = "Receives before a record moves to the dead-letter queue. With ReportBatchItemFailures only the failed records of a batch count up."
  type        = number
  default     = 5
}

variable "enable_event_source_mapping" {
  description = "Create the event source mapping that feeds the queue to the dispatch function. A plain bool (not derived from the function ARN) so that the plan knows it before the function exists."
  type        = bool
  default     = true
}

variable "dispatch_function_arn" {
  description = "ARN (or name) of the dispatch function that consumes the queue; required when enable_event_source_mapping is true."
  type        = string
  default     = null
}

variable "batch_size" {
  description = "Records per dispatch invocation (1-10 without a batching window)."
  type        = number
  default     = 10
}

variable "maximum_batching_window_in_seconds" {
  description = "How long Lambda gathers records before invoking; 0 favours latency, which a push system wants."
  type        = number
  default     = 0
}

variable "maximum_concurrency" {
  description = "Upper bound of concurrent dispatch invocations fed by the queue (2-1000); null lets Lambda scale freely."
  type        = number
  default     = null
}

variable "dlq_alarm_actions" {
  description = "SNS topic ARNs notified when the dead-letter queue holds a message. Empty: the alarm still exists, without actions."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Extra tags for the queues and the alarm."
  type        = map(string)
  default     = {}
}
