# Terraform and provider versions of the edgepush stack.
#
# State: local by default. For a team, configure a remote backend in a
# `backend.tf` next to this file (see infra/README.md), for example S3 with
# DynamoDB locking.

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
  region = var.aws_region

  default_tags {
    tags = merge({ Project = var.project, Environment = var.environment }, var.tags)
  }
}
