# The local environment: the parts of the stack that LocalStack's free
# edition emulates (SSM, SQS, Lambda with Docker, IAM, CloudWatch Logs),
# with the AWS provider pointed at LocalStack.
#
#   scripts/start-localstack          (or: docker compose -f docker/compose.yml -f docker/compose.override.yml up localstack)
#   cd infra/environments/local && terraform init && terraform apply
#
# Not here, because LocalStack's free edition has no API Gateway v2, ECS,
# ELBv2 or ElastiCache: the HTTP and WebSocket APIs, the edge node service and
# Redis. Locally, Redis and MongoDB are plain servers (redis_url,
# mongodb_uri) and edge nodes run as processes or compose services.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.40"
    }
  }
}

provider "aws" {
  region     = var.aws_region
  access_key = "test"
  secret_key = "test"

  # LocalStack accepts any credentials and has no instance metadata.
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  s3_use_path_style           = true

  endpoints {
    cloudwatch     = var.localstack_endpoint
    iam            = var.localstack_endpoint
    lambda         = var.localstack_endpoint
    logs           = var.localstack_endpoint
    s3             = var.localstack_endpoint
    secretsmanager = var.localstack_endpoint
    sns            = var.localstack_endpoint
    sqs            = var.localstack_endpoint
    ssm            = var.localstack_endpoint
    sts            = var.localstack_endpoint
  }

  default_tags {
    tags = { Project = "edgepush", Environment = var.environment }
  }
}
