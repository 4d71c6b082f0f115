//! Settings the service could not run with, each refused with its key and
//! line by the same parse `serve` and `config check` use.

mod support;

const LOCAL: &str = include_str!("../../../examples/local.toml");

/// Parses `text` and returns the one issue at `path` with its line.
fn refused(text: &str, path: &str) -> (String, Option<usize>) {
    let err = support::parse(text).expect_err("must be refused");
    let issue = err
        .issues
        .iter()
        .find(|i| i.path == path)
        .unwrap_or_else(|| panic!("no issue at {path}: {err}"));
    (issue.message.clone(), issue.line)
}

fn line_of(text: &str, starts: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(starts))
        .unwrap_or_else(|| panic!("no line {starts:?}"))
        + 1
}

#[test]
fn the_local_example_passes_every_service_rule() {
    support::parse(LOCAL).expect("valid");
}

#[test]
fn a_zero_tick_is_refused() {
    let text = LOCAL.replace("tick = \"1s\"", "tick = \"0s\"");
    let (message, line) = refused(&text, "server.tick");
    assert!(message.contains("between 10ms and 1m"), "{message}");
    assert_eq!(line, Some(line_of(&text, "tick =")));
}

#[test]
fn a_million_day_tick_is_refused() {
    let text = LOCAL.replace("tick = \"1s\"", "tick = \"1000000days\"");
    refused(&text, "server.tick");
}

#[test]
fn a_zero_reconcile_interval_is_refused() {
    let text = LOCAL.replace(
        "tick = \"1s\"",
        "tick = \"1s\"\nreconcile_interval = \"0s\"",
    );
    let (_, line) = refused(&text, "server.reconcile_interval");
    assert_eq!(line, Some(line_of(&text, "reconcile_interval")));
}

#[test]
fn a_zero_bootstrap_token_ttl_is_refused() {
    let text = LOCAL.replace(
        "bootstrap_token_ttl = \"10m\"",
        "bootstrap_token_ttl = \"0s\"",
    );
    let (_, line) = refused(&text, "server.bootstrap_token_ttl");
    assert_eq!(line, Some(line_of(&text, "bootstrap_token_ttl")));
}

#[test]
fn a_heartbeat_timeout_no_heartbeat_interval_fits_is_refused() {
    let text = LOCAL.replace(
        "heartbeat_timeout = \"15s\"",
        "heartbeat_timeout = \"200ms\"",
    );
    let (message, line) = refused(&text, "engine.heartbeat_timeout");
    assert!(message.contains("between 1s and 1h"), "{message}");
    assert_eq!(line, Some(line_of(&text, "heartbeat_timeout")));
    // The interval agents are told follows the timeout.
    assert_eq!(
        ebbtide_config::heartbeat_interval(std::time::Duration::from_secs(15)),
        std::time::Duration::from_millis(3750)
    );
}

#[test]
fn two_tenants_with_one_api_key_are_refused() {
    let text = LOCAL.replace(
        "api_key = \"team-b-key-0123456789abcdef\"",
        "api_key = \"demo-key-0123456789abcdef\"",
    );
    assert_ne!(text, LOCAL, "the example has a second tenant key");
    let (message, _) = refused(&text, "tenants[1].api_key");
    assert!(
        message.contains("same API key as tenant \"demo\""),
        "{message}"
    );
}

#[test]
fn an_operator_with_a_tenants_key_is_refused() {
    let text = LOCAL.replace(
        "api_key = \"ops-key-0123456789abcdef\"",
        "api_key = \"team-b-key-0123456789abcdef\"",
    );
    assert_ne!(text, LOCAL, "the example has an operator key");
    let (message, _) = refused(&text, "operators[0].api_key");
    assert!(
        message.contains("operator \"oncall\" has the same API key as tenant \"team-b\""),
        "{message}"
    );
}

#[test]
fn an_operator_needs_a_long_enough_key_and_a_unique_name() {
    let short = LOCAL.replace(
        "api_key = \"ops-key-0123456789abcdef\"",
        "api_key = \"ops\"",
    );
    let (message, _) = refused(&short, "operators[0].api_key");
    assert!(message.contains("at least 16 characters"), "{message}");
    let keyless = LOCAL.replace("api_key = \"ops-key-0123456789abcdef\"\n", "");
    let (message, _) = refused(&keyless, "operators[0].api_key");
    assert!(
        message.contains("needs `api_key` or `api_key_env`"),
        "{message}"
    );
    let twice = format!(
        "{LOCAL}\n[[operators]]\nname = \"oncall\"\napi_key = \"ops-key-2-0123456789abcdef\"\n"
    );
    let (message, _) = refused(&twice, "operators[1].name");
    assert!(message.contains("listed twice"), "{message}");
}

#[test]
fn an_unknown_provider_is_refused() {
    let text = LOCAL.replacen("provider = \"local\"", "provider = \"openstack\"", 1);
    let (message, line) = refused(&text, "pools[0].provider");
    assert!(
        message.contains("local, docker, aws"),
        "names what the build has: {message}"
    );
    assert_eq!(line, Some(line_of(&text, "provider = \"openstack\"")));
}

#[test]
fn both_apis_on_one_port_are_refused() {
    let text = LOCAL.replace(
        "grpc_listen = \"127.0.0.1:8081\"",
        "grpc_listen = \"0.0.0.0:8080\"",
    );
    let (message, _) = refused(&text, "server.grpc_listen");
    assert!(message.contains("cannot share"), "{message}");
}

#[test]
fn an_invalid_listen_address_is_refused() {
    let text = LOCAL.replace(
        "http_listen = \"127.0.0.1:8080\"",
        "http_listen = \"localhost\"",
    );
    let (message, line) = refused(&text, "server.http_listen");
    assert!(message.contains("IP:PORT"), "{message}");
    assert_eq!(line, Some(line_of(&text, "http_listen")));
}

#[test]
fn an_absurd_pool_maximum_is_refused() {
    let text = LOCAL.replacen("max = ", "max = 4294967295\n#", 1);
    let err = support::parse(&text).expect_err("refused");
    assert!(
        err.issues
            .iter()
            .any(|i| i.path.ends_with("].max") && i.message.contains("at most 100000")),
        "{err}"
    );
}

#[test]
fn an_output_cap_below_a_kilobyte_is_refused() {
    let text = LOCAL.replace("tick = \"1s\"", "tick = \"1s\"\nmax_job_output_bytes = 10");
    refused(&text, "server.max_job_output_bytes");
}

#[test]
fn a_config_without_pools_or_keys_is_valid_but_warned_about() {
    let c = support::parse("[server]\n").expect("valid");
    let w = ebbtide_config::warnings(&c);
    assert!(w.iter().any(|w| w.contains("no [[pools]]")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("nobody can submit")), "{w:?}");
    assert!(ebbtide_config::warnings(&support::parse(LOCAL).expect("valid")).is_empty());
}

#[test]
fn a_zero_assignment_timeout_is_refused() {
    let text = LOCAL.replace(
        "heartbeat_timeout = \"15s\"",
        "heartbeat_timeout = \"15s\"\nassignment_timeout = \"0s\"",
    );
    let (_, line) = refused(&text, "engine.assignment_timeout");
    assert_eq!(line, Some(line_of(&text, "assignment_timeout")));
}
