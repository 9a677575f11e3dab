# Example values for a local stack: LocalStack from scripts/start-localstack
# (or localstack/compose.yaml), Redis and MongoDB on their usual ports.
# Every value here is a development value; nothing secret.

localstack_endpoint = "http://localhost:4566"
aws_region          = "us-east-1"
environment         = "local"

mongodb_uri      = "mongodb://localhost:27017"
mongodb_database = "edgepush"
redis_url        = "redis://localhost:6379"

jwt_secret             = "dev-jwt-secret-0123456789"
push_access_key_id     = "dev-push"
push_secret_access_key = "dev-push-secret"
api_keys               = { default = "dev-api-key" }

# true needs LocalStack with a Docker engine (Lambda runs functions in
# containers) and `cargo lambda build --release --compiler cargo --output-format zip`.
enable_functions    = false
lambda_architecture = "x86_64"
