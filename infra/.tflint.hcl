# tflint's configuration for infra/ (scripts/check-infra runs
# `tflint --recursive` with it). The bundled terraform ruleset only: the AWS
# ruleset plugin cannot be downloaded on the project's machines.
config {
  # Also lint the local modules' calls (argument values passed to them).
  call_module_type = "all"
}

plugin "terraform" {
  enabled = true
  preset  = "all"
}
