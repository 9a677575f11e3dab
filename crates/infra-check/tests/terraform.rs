//! Static checks of `infra/` that `terraform fmt`, `tflint` and `checkov`
//! (`scripts/check-infra`) do not make: every name resolves and every module
//! call matches its module (the provider-free part of `terraform validate`,
//! which cannot run here without the AWS provider), and the deployment has
//! the shape the design asks for. Plus tests of the checker itself on
//! fixtures, so a clean report means something.

use std::path::{Path, PathBuf};

use edgepush_infra_check::{Module, Problem, check_module, check_tree};
use hcl::{Block, Body, Expression};

fn infra_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/infra-check is two levels below the workspace root")
        .join("infra")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn show(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse(path: &Path) -> Body {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hcl::parse(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// Top-level blocks `kind "labels[0]" "labels[1]"...` of `body`.
fn blocks<'a>(body: &'a Body, kind: &str, labels: &[&str]) -> Vec<&'a Block> {
    body.blocks()
        .filter(|b| b.identifier.as_str() == kind)
        .filter(|b| {
            labels
                .iter()
                .zip(b.labels.iter())
                .all(|(want, got)| *want == got.as_str())
        })
        .collect()
}

fn only_block<'a>(body: &'a Body, kind: &str, labels: &[&str]) -> &'a Block {
    let found = blocks(body, kind, labels);
    assert_eq!(found.len(), 1, "expected one {kind} {labels:?}");
    found[0]
}

fn attr<'a>(body: &'a Body, key: &str) -> &'a Expression {
    body.attributes()
        .find(|a| a.key.as_str() == key)
        .map(|a| &a.expr)
        .unwrap_or_else(|| panic!("no attribute {key}"))
}

/// An expression rendered back to HCL text, for comparisons.
fn text(expr: &Expression) -> String {
    expr.to_string()
}

// ---------------------------------------------------------------------------
// infra/ itself
// ---------------------------------------------------------------------------

#[test]
fn every_name_in_infra_resolves_and_every_module_call_matches() {
    let infra = infra_dir();
    let report = check_tree(&infra, &[]).expect("infra/ is readable");

    assert!(
        report.problems.is_empty(),
        "{} problem(s) in infra/:\n{}",
        report.problems.len(),
        show(&report.problems)
    );
    // The walk really covered the tree: root, local environment, 8 modules.
    let rel: Vec<String> = report
        .modules
        .iter()
        .map(|m| m.strip_prefix(&infra).unwrap_or(m).display().to_string())
        .collect();
    for expected in [
        "",
        "environments/local",
        "modules/network",
        "modules/functions",
        "modules/queue",
        "modules/http_api",
        "modules/websocket_api",
        "modules/redis",
        "modules/edge_nodes",
        "modules/params",
    ] {
        assert!(
            rel.iter().any(|r| r == expected),
            "module {expected:?} not checked; checked: {rel:?}"
        );
    }
    assert!(
        report.files.len() >= 30,
        "only {} .tf files found",
        report.files.len()
    );
}

#[test]
fn root_pins_the_aws_provider_to_major_version_5() {
    let body = parse(&infra_dir().join("versions.tf"));
    let terraform = only_block(&body, "terraform", &[]);
    let providers = only_block(&terraform.body, "required_providers", &[]);
    let aws = text(attr(&providers.body, "aws"));
    assert!(aws.contains("hashicorp/aws"), "{aws}");
    assert!(
        aws.contains("~> 5."),
        "aws provider not pinned to 5.x: {aws}"
    );
}

#[test]
fn root_outputs_cover_the_endpoints_operators_need() {
    let module = Module::load(&infra_dir()).expect("infra/ loads");
    for output in [
        "collect_url",
        "websocket_url",
        "nlb_dns_name",
        "queue_url",
        "dlq_url",
    ] {
        assert!(
            module.outputs.contains_key(output),
            "root output {output} missing"
        );
    }
    assert!(
        module.variables.len() >= 30,
        "root variables: {}",
        module.variables.len()
    );
    for name in [
        "network",
        "params",
        "redis",
        "queue",
        "functions",
        "http_api",
        "websocket_api",
        "edge_nodes",
    ] {
        assert!(
            module.calls.contains_key(name),
            "root does not call module {name}"
        );
    }
}

#[test]
fn queue_feeds_dispatch_with_partial_batch_failures_and_a_dlq() {
    let body = parse(&infra_dir().join("modules/queue/main.tf"));
    let mapping = only_block(
        &body,
        "resource",
        &["aws_lambda_event_source_mapping", "dispatch"],
    );
    assert_eq!(
        attr(&mapping.body, "function_response_types"),
        &Expression::Array(vec![Expression::String("ReportBatchItemFailures".into())])
    );
    let queue = only_block(&body, "resource", &["aws_sqs_queue", "this"]);
    let redrive = text(attr(&queue.body, "redrive_policy"));
    assert!(redrive.contains("aws_sqs_queue.dlq.arn"), "{redrive}");
    assert!(redrive.contains("maxReceiveCount"), "{redrive}");
}

#[test]
fn edge_nodes_drain_before_the_nlb_and_ecs_let_go() {
    let body = parse(&infra_dir().join("modules/edge_nodes/main.tf"));
    let group = only_block(&body, "resource", &["aws_lb_target_group", "ws"]);
    assert_eq!(
        text(attr(&group.body, "deregistration_delay")),
        "var.drain_timeout_seconds"
    );
    let health = only_block(&group.body, "health_check", &[]);
    assert_eq!(text(attr(&health.body, "path")), r#""/healthz""#);
    assert!(text(attr(&health.body, "port")).contains("var.push_port"));

    let task = only_block(&body, "resource", &["aws_ecs_task_definition", "this"]);
    let containers = text(attr(&task.body, "container_definitions"));
    assert!(containers.contains("stopTimeout"), "{containers}");
    assert!(containers.contains("secrets"), "{containers}");

    // Defaults: deregistration delay 30 s > node drain 25 s.
    let vars = Module::load(&infra_dir().join("modules/edge_nodes")).expect("loads");
    assert!(vars.variables["drain_timeout_seconds"].has_default);
    let vars_body = parse(&infra_dir().join("modules/edge_nodes/variables.tf"));
    let drain = only_block(&vars_body, "variable", &["drain_timeout_seconds"]);
    let node = only_block(&vars_body, "variable", &["node_drain_timeout_ms"]);
    let drain_s: u64 = text(attr(&drain.body, "default")).parse().expect("number");
    let node_ms: u64 = text(attr(&node.body, "default")).parse().expect("number");
    assert!(
        node_ms < drain_s * 1000,
        "node drain {node_ms} ms >= deregistration {drain_s} s"
    );
}

#[test]
fn local_environment_points_the_provider_at_localstack() {
    let body = parse(&infra_dir().join("environments/local/versions.tf"));
    let provider = only_block(&body, "provider", &["aws"]);
    assert_eq!(
        text(attr(&provider.body, "skip_credentials_validation")),
        "true"
    );
    let endpoints = only_block(&provider.body, "endpoints", &[]);
    for service in ["sqs", "ssm", "lambda", "iam", "sts", "logs"] {
        assert_eq!(
            text(attr(&endpoints.body, service)),
            "var.localstack_endpoint",
            "endpoint {service}"
        );
    }
    assert!(
        infra_dir()
            .join("environments/local/terraform.tfvars")
            .is_file()
    );
}

#[test]
fn every_function_role_is_its_own() {
    let body = parse(&infra_dir().join("modules/functions/main.tf"));
    let role = only_block(&body, "resource", &["aws_iam_role", "this"]);
    assert_eq!(text(attr(&role.body, "for_each")), "local.functions");
    let policy = hcl::format::to_string(
        &only_block(&body, "data", &["aws_iam_policy_document", "function"]).body,
    )
    .expect("formats");
    for needle in [
        "sqs:SendMessage",
        "sqs:ReceiveMessage",
        "execute-api:ManageConnections",
        "ssm:GetParameter",
        "aws_cloudwatch_log_group.this[each.key].arn",
    ] {
        assert!(policy.contains(needle), "function policy lacks {needle}");
    }
    assert!(!policy.contains("\"logs:*\""), "no blanket logs:*");
}

// ---------------------------------------------------------------------------
// The checker itself
// ---------------------------------------------------------------------------

#[test]
fn checker_accepts_scoped_names_templates_and_module_outputs() {
    let problems = check_module(&fixture("good")).expect("fixture loads");
    assert!(problems.is_empty(), "false positives:\n{}", show(&problems));
}

#[test]
fn checker_catches_every_planted_mistake() {
    let problems = check_module(&fixture("bad")).expect("fixture loads");
    let all = show(&problems);
    for expected in [
        "var.missing_var is not a declared variable",
        "local.missing_local is not a declared local value",
        "argument \"not_a_variable\" is not a variable of module source \"./child\"",
        "required variable \"required_input\" of module source \"./child\" is not passed",
        "module source \"./does-not-exist\" does not exist",
        "module.child.nope: module source \"./child\" declares no output \"nope\"",
        "aws_s3_bucket.nope is not a declared resource",
        "data.aws_region.nope is not a declared data source",
        "output constant: output value references nothing",
    ] {
        assert!(
            all.contains(expected),
            "not caught: {expected}\nreport:\n{all}"
        );
    }
    assert_eq!(problems.len(), 9, "unexpected extra problems:\n{all}");
}

#[test]
fn checker_walks_subdirectories_and_honours_exclusions() {
    let fixtures = fixture("");
    let all = check_tree(&fixtures, &[]).expect("readable");
    assert!(
        all.modules.iter().any(|m| m.ends_with("good/child")),
        "{:?}",
        all.modules
    );
    assert!(
        !all.problems.is_empty(),
        "the bad fixtures are part of this walk"
    );

    let clean = check_tree(&fixtures, &[fixture("bad")]).expect("readable");
    assert!(clean.problems.is_empty(), "{}", show(&clean.problems));
    assert!(!clean.modules.iter().any(|m| m.starts_with(fixture("bad"))));
}
