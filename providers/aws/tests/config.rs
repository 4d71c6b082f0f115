//! `[providers.aws]` as operators write it, and the errors they get.

use ebbtide_config::ProviderSchema;
use ebbtide_provider_aws::{AwsPlugin, AwsSettings};

const PROVIDERS: &[&dyn ProviderSchema] = &[&AwsPlugin];

const POOL: &str = r#"[[pools]]
name = "ec2"
provider = "aws"
kind = "dynamic"
max = 4
on_demand_price = 0.096
[pools.shape]
name = "m6i.large"
cpu_millis = 2000
memory_mib = 8192
"#;

const SECTION: &str = r#"
[providers.aws]
region = "eu-west-1"
[providers.aws.on_demand_prices]
"m6i.large" = 0.096
[providers.aws.pools.ec2]
ami = "ami-0123456789abcdef0"
instance_types = ["m6i.large"]
subnets = [{ id = "subnet-a", zone = "eu-west-1a" }]
"#;

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in the text"))
        + 1
}

#[test]
fn a_valid_section_gives_the_launch_settings_and_the_region() {
    let c = ebbtide_config::parse(&format!("{POOL}{SECTION}"), PROVIDERS).expect("valid");
    let aws = c.providers.get("aws").expect("configured");
    assert_eq!(aws.settings.region(), Some("eu-west-1"));
    let settings: &AwsSettings = aws.settings.get().expect("the provider's own type");
    assert_eq!(settings.pools["ec2"].subnets[0].zone, "eu-west-1a");
    assert_eq!(
        settings.on_demand_prices["m6i.large"],
        ebbtide_core::PricePerHour(ebbtide_core::Micros(96_000))
    );
}

#[test]
fn a_pool_without_launch_settings_is_refused_at_its_provider_key() {
    let text = format!("{POOL}{SECTION}")
        .replace("[providers.aws.pools.ec2]", "[providers.aws.pools.other]");
    let err = ebbtide_config::parse(&text, PROVIDERS).expect_err("no launch settings");
    let issue = err
        .issues
        .iter()
        .find(|i| i.path == "pools[0].provider")
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        issue.message.contains("[providers.aws.pools.ec2]"),
        "{issue}"
    );
    assert_eq!(issue.line, Some(line_of(&text, "provider = \"aws\"")));
}

#[test]
fn an_instance_type_without_a_price_and_a_typo_are_refused_with_their_lines() {
    let text = format!("{POOL}{SECTION}").replace(
        r#"instance_types = ["m6i.large"]"#,
        r#"instance_types = ["m6i.large", "m7i.large"]"#,
    );
    let err = ebbtide_config::parse(&text, PROVIDERS).expect_err("no price");
    let issue = &err.issues[0];
    assert_eq!(issue.path, "providers.aws.pools.ec2.instance_types");
    assert!(issue.message.contains("m7i.large has no price"), "{issue}");
    assert_eq!(issue.line, Some(line_of(&text, "instance_types")));

    let text = format!("{POOL}{SECTION}").replace("ami =", "amj =");
    let err = ebbtide_config::parse(&text, PROVIDERS).expect_err("typo");
    let issue = &err.issues[0];
    assert!(issue.message.contains("unknown field `amj`"), "{issue}");
    assert_eq!(issue.line, Some(line_of(&text, "amj =")), "{issue}");
}

#[test]
fn a_pool_on_aws_needs_the_table() {
    let err = ebbtide_config::parse(POOL, PROVIDERS).expect_err("no [providers.aws]");
    assert_eq!(err.issues[0].path, "providers.aws");
}

#[test]
fn an_identity_certificate_that_cannot_be_read_is_refused_before_serve() {
    let text = format!("{POOL}{SECTION}").replace(
        "region = \"eu-west-1\"",
        "region = \"eu-west-1\"\nidentity_certificate = \"/nonexistent/aws.pem\"",
    );
    let err = ebbtide_config::parse(&text, PROVIDERS).expect_err("unreadable");
    let issue = &err.issues[0];
    assert_eq!(issue.path, "providers.aws.identity_certificate");
    assert!(issue.message.contains("/nonexistent/aws.pem"), "{issue}");
    assert_eq!(issue.line, Some(line_of(&text, "identity_certificate")));

    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let text = text.replace("/nonexistent/aws.pem", &junk.display().to_string());
    let err = ebbtide_config::parse(&text, PROVIDERS).expect_err("not PEM");
    assert!(
        err.issues[0].message.contains("expected a PEM"),
        "{}",
        err.issues[0]
    );
}

#[test]
fn an_s3_bucket_takes_the_aws_region() {
    let text = format!(
        "{POOL}{SECTION}\n[cost_reports.s3]\nbucket = \"acme-finops\"\nprefix = \"/ci/ebbtide/\"\n"
    );
    let c = ebbtide_config::parse(&text, PROVIDERS).expect("valid");
    let s3 = c.cost_reports.s3.expect("s3");
    assert_eq!(s3.region, "eu-west-1");
    assert_eq!(s3.prefix, "ci/ebbtide");
}
