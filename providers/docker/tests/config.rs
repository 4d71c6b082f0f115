//! `[providers.docker]` as operators write it, and the errors they get.

use ebbtide_config::ProviderSchema;
use ebbtide_provider_docker::{DockerPlugin, DockerSettings};

const PROVIDERS: &[&dyn ProviderSchema] = &[&DockerPlugin];

const TEXT: &str = "[[pools]]\nname = \"c\"\nprovider = \"docker\"\nkind = \"dynamic\"\nmax = 2\n[pools.shape]\nname = \"small\"\ncpu_millis = 1000\nmemory_mib = 256\n\n[providers.docker]\n[providers.docker.prices]\nlarge = 0.1\n";

#[test]
fn a_docker_pool_needs_a_price_for_its_shape() {
    let err = ebbtide_config::parse(TEXT, PROVIDERS).expect_err("no price for small");
    let issue = err
        .issues
        .iter()
        .find(|i| i.path == "pools[0].shape.name")
        .unwrap_or_else(|| panic!("{err}"));
    assert!(issue.message.contains("no price"), "{issue}");
    assert_eq!(
        issue.line,
        Some(7),
        "the pool's [pools.shape] name: {issue}"
    );
    let ok = TEXT.replace("large = 0.1", "small = 0.012");
    let config = ebbtide_config::parse(&ok, PROVIDERS).expect("valid");
    let docker: &DockerSettings = config
        .providers
        .get("docker")
        .and_then(|d| d.settings.get())
        .expect("docker settings");
    assert_eq!(docker.network, "host");
    assert_eq!(
        docker.prices["small"],
        ebbtide_core::PricePerHour(ebbtide_core::Micros(12_000))
    );
}

#[test]
fn a_negative_price_and_an_unknown_key_name_their_lines() {
    let text = TEXT.replace(
        "large = 0.1",
        "small = -1.0\n[providers.docker.api]\nburst = 2",
    );
    let err = ebbtide_config::parse(&text, PROVIDERS).expect_err("negative");
    let issue = &err.issues[0];
    assert_eq!(issue.path, "providers.docker.prices.small");
    assert_eq!(issue.line, Some(13), "{issue}");
    let text = TEXT.replace(
        "[providers.docker]\n",
        "[providers.docker]\nnetwrok = \"host\"\n",
    );
    let err = ebbtide_config::parse(&text, PROVIDERS).expect_err("typo");
    assert!(
        err.issues[0].message.contains("netwrok"),
        "{}",
        err.issues[0]
    );
    assert_eq!(err.issues[0].line, Some(12));
}
