# The VPC of an edgepush deployment: public subnets for the NLB and NAT,
# private subnets for the Lambda functions, the edge nodes and ElastiCache,
# and one security group per tier.
#
# Traffic allowed (everything else is refused):
#   clients        -> NLB            listener ports (80/443)
#   NLB            -> edge nodes     ws_port (client sockets), push_port (/healthz)
#   functions      -> edge nodes     push_port (dispatch's PostToConnection)
#   functions      -> Redis          redis_port
#   edge nodes     -> Redis          redis_port
#   functions, edge nodes -> anywhere (MongoDB, AWS APIs) through NAT or endpoints

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only the first az_count zones are used (local.azs slices the list), so a zone AWS adds later changes nothing.
  state = "available"
}

data "aws_region" "current" {}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, var.az_count)
  # One NAT gateway, or one per zone.
  nat_count = var.enable_nat_gateway ? (var.single_nat_gateway ? 1 : var.az_count) : 0
  # No execute-api endpoint: with private DNS it would capture the public
  # WebSocket management API's host names too, so dispatch needs NAT to
  # reach API Gateway's @connections API.
  interface_endpoints = var.enable_vpc_endpoints ? toset(["ssm", "sqs", "logs", "ecr.api", "ecr.dkr"]) : toset([])
}

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11:Flow logs are billed per GB and usually enabled account-wide (AWS Config, Security Hub); add an aws_flow_log where the account has none.
  cidr_block           = var.cidr_block
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  count = var.az_count

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.cidr_block, 8, count.index)
  map_public_ip_on_launch = false

  tags = merge(var.tags, { Name = "${var.name}-public-${local.azs[count.index]}", Tier = "public" })
}

resource "aws_subnet" "private" {
  count = var.az_count

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.cidr_block, 8, count.index + 100)

  tags = merge(var.tags, { Name = "${var.name}-private-${local.azs[count.index]}", Tier = "private" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count = var.az_count

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nat" {
  count = local.nat_count

  domain = "vpc"
  tags   = merge(var.tags, { Name = "${var.name}-nat-${count.index}" })
}

resource "aws_nat_gateway" "this" {
  count = local.nat_count

  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = merge(var.tags, { Name = "${var.name}-nat-${count.index}" })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "private" {
  count = var.az_count

  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-private-${local.azs[count.index]}" })
}

resource "aws_route" "private_nat" {
  count = var.enable_nat_gateway ? var.az_count : 0

  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[var.single_nat_gateway ? 0 : count.index].id
}

resource "aws_route_table_association" "private" {
  count = var.az_count

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# ---------------------------------------------------------------------------
# The VPC's default security group, emptied: no rule, so anything left in it
# (a resource created without a group) can neither send nor receive.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-default-deny" })
}

# Security groups. Rules are separate resources (provider v5 style), so one
# group can name another without a dependency cycle.
# ---------------------------------------------------------------------------

resource "aws_security_group" "nlb" {
  #checkov:skip=CKV2_AWS_5:Attached to the NLB (modules/edge_nodes) through this module's outputs; checkov does not follow ids across modules.
  name        = "${var.name}-nlb"
  description = "edgepush NLB: client WebSockets in, edge nodes out"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-nlb" })
}

resource "aws_security_group" "edge" {
  #checkov:skip=CKV2_AWS_5:Attached to the ECS service (modules/edge_nodes) through this module's outputs; checkov does not follow ids across modules.
  name        = "${var.name}-edge"
  description = "edgepush edge nodes: sockets from the NLB, pushes from the functions"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-edge" })
}

resource "aws_security_group" "functions" {
  #checkov:skip=CKV2_AWS_5:Attached to the Lambda functions (modules/functions) through this module's outputs; checkov does not follow ids across modules.
  name        = "${var.name}-functions"
  description = "edgepush Lambda functions attached to the VPC"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-functions" })
}

resource "aws_security_group" "redis" {
  #checkov:skip=CKV2_AWS_5:Attached to the replication group (modules/redis) through this module's outputs; checkov does not follow ids across modules.
  name        = "${var.name}-redis"
  description = "edgepush ElastiCache Redis: functions and edge nodes only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-redis" })
}

resource "aws_security_group" "endpoints" {
  count = var.enable_vpc_endpoints ? 1 : 0

  name        = "${var.name}-endpoints"
  description = "edgepush VPC interface endpoints: HTTPS from inside the VPC"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-endpoints" })
}

# Clients -> NLB.
resource "aws_vpc_security_group_ingress_rule" "nlb_clients" {
  for_each = {
    for pair in setproduct(var.client_cidr_blocks, var.nlb_listener_ports) :
    "${pair[0]}:${pair[1]}" => { cidr = pair[0], port = pair[1] }
  }

  security_group_id = aws_security_group.nlb.id
  description       = "WebSocket clients"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
}

# NLB -> edge nodes: client sockets and health checks.
resource "aws_vpc_security_group_egress_rule" "nlb_to_edge" {
  for_each = toset([tostring(var.ws_port), tostring(var.push_port)])

  security_group_id            = aws_security_group.nlb.id
  description                  = "to edge nodes"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = aws_security_group.edge.id
}

resource "aws_vpc_security_group_ingress_rule" "edge_from_nlb" {
  for_each = toset([tostring(var.ws_port), tostring(var.push_port)])

  security_group_id            = aws_security_group.edge.id
  description                  = "client sockets and health checks from the NLB"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = aws_security_group.nlb.id
}

# Functions (dispatch) -> edge nodes' push API.
resource "aws_vpc_security_group_ingress_rule" "edge_push_from_functions" {
  security_group_id            = aws_security_group.edge.id
  description                  = "push API from dispatch"
  ip_protocol                  = "tcp"
  from_port                    = var.push_port
  to_port                      = var.push_port
  referenced_security_group_id = aws_security_group.functions.id
}

# Functions and edge nodes -> Redis.
resource "aws_vpc_security_group_ingress_rule" "redis" {
  for_each = {
    functions = aws_security_group.functions.id
    edge      = aws_security_group.edge.id
  }

  security_group_id            = aws_security_group.redis.id
  description                  = "Redis from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = var.redis_port
  to_port                      = var.redis_port
  referenced_security_group_id = each.value
}

# Functions and edge nodes -> anywhere (MongoDB Atlas, AWS APIs, Redis, edge
# nodes). Outbound is open; inbound is what the rules above allow.
resource "aws_vpc_security_group_egress_rule" "all" {
  for_each = {
    functions = aws_security_group.functions.id
    edge      = aws_security_group.edge.id
  }

  security_group_id = each.value
  description       = "all outbound"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "endpoints" {
  count = var.enable_vpc_endpoints ? 1 : 0

  security_group_id = aws_security_group.endpoints[0].id
  description       = "HTTPS from the VPC"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.cidr_block
}

# ---------------------------------------------------------------------------
# Optional VPC endpoints: AWS APIs without NAT.
# ---------------------------------------------------------------------------

resource "aws_vpc_endpoint" "interface" {
  for_each = local.interface_endpoints

  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.${each.value}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true

  tags = merge(var.tags, { Name = "${var.name}-${each.value}" })
}

# ECR image layers come from S3.
resource "aws_vpc_endpoint" "s3" {
  count = var.enable_vpc_endpoints ? 1 : 0

  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id

  tags = merge(var.tags, { Name = "${var.name}-s3" })
}
