variable "name" {
  description = "Name prefix of every network resource, e.g. \"edgepush-prod\"."
  type        = string
}

variable "cidr_block" {
  description = "IPv4 CIDR of the VPC. Subnets are /24 slices of it (public from .0, private from .100)."
  type        = string
  default     = "10.40.0.0/16"
}

variable "az_count" {
  description = "How many availability zones to spread the subnets over (2 or 3)."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 6
    error_message = "az_count must be between 2 and 6: ElastiCache Multi-AZ and the NLB want at least two zones."
  }
}

variable "enable_nat_gateway" {
  description = "Create NAT gateways so that private subnets (functions, edge nodes) reach the internet: MongoDB Atlas, ECR, SSM, SQS, CloudWatch. Without NAT, set enable_vpc_endpoints and reach MongoDB over PrivateLink or peering."
  type        = bool
  default     = true
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) instead of one per zone (survives a zone outage)."
  type        = bool
  default     = true
}

variable "enable_vpc_endpoints" {
  description = "Create interface endpoints for SSM, SQS, CloudWatch Logs, ECR and an S3 gateway endpoint, so the private subnets reach those services without NAT."
  type        = bool
  default     = false
}

variable "ws_port" {
  description = "The edge nodes' client WebSocket port (EDGEPUSH_WS_ADDR)."
  type        = number
  default     = 9001
}

variable "push_port" {
  description = "The edge nodes' push API port (EDGEPUSH_PUSH_ADDR): dispatch pushes there, the NLB health-checks /healthz there."
  type        = number
  default     = 9101
}

variable "redis_port" {
  description = "The Redis port the functions and edge nodes connect to."
  type        = number
  default     = 6379
}

variable "client_cidr_blocks" {
  description = "Who may open WebSocket connections through the NLB."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "nlb_listener_ports" {
  description = "The NLB's listener ports that clients connect to (TCP 80, TLS 443)."
  type        = list(number)
  default     = [80, 443]
}

variable "tags" {
  description = "Extra tags for every resource of this module."
  type        = map(string)
  default     = {}
}
