//! `[providers.gce]` as operators write it, and the errors they get: each
//! names its key and line and says what is expected.

use ebbtide_config::ProviderSchema;
use ebbtide_core::{Micros, PricePerHour};
use ebbtide_provider_gce::{GcePlugin, GceSettings, PoolSource};

const PROVIDERS: &[&dyn ProviderSchema] = &[&GcePlugin];

const HEAD: &str = r#"[server]
cluster = "ci-east"

[[pools]]
name = "linux"
provider = "gce"
kind = "dynamic"
max = 4
on_demand_price = 0.134
[pools.shape]
name = "e2-standard-4"
cpu_millis = 4000
memory_mib = 16384
[pools.market]
spot_percent = 100
"#;

const SECTION: &str = r#"
[providers.gce]
project = "acme-ci"
region = "us-central1"
zones = ["us-central1-a", "us-central1-b"]
[providers.gce.pools.linux]
machine_types = ["e2-standard-4", "n2d-standard-4"]
image = "projects/debian-cloud/global/images/family/debian-12"
"#;

fn issues(text: &str) -> Vec<(Option<usize>, String, String)> {
    match ebbtide_config::parse(text, PROVIDERS) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .issues
            .iter()
            .map(|i| (i.line, i.path.clone(), i.message.clone()))
            .collect(),
    }
}

fn one_issue(text: &str, path: &str) -> (Option<usize>, String) {
    let all = issues(text);
    let found = all
        .iter()
        .find(|(_, p, _)| p == path)
        .unwrap_or_else(|| panic!("no issue at {path}: {all:?}"));
    (found.0, found.2.clone())
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in the text"))
        + 1
}

#[test]
fn a_valid_section_takes_list_prices_from_the_table_and_fills_the_defaults() {
    let c = ebbtide_config::parse(&format!("{HEAD}{SECTION}"), PROVIDERS).expect("valid");
    let gce = c.providers.get("gce").expect("configured");
    assert_eq!(gce.settings.region(), Some("us-central1"));
    let s: &GceSettings = gce.settings.get().expect("the provider's own type");
    let listed =
        ebbtide_provider_gce::prices::list_price("e2-standard-4", "us-central1").expect("listed");
    assert_eq!(s.on_demand_prices["e2-standard-4"], listed.on_demand);
    assert_eq!(Some(s.spot_prices["e2-standard-4"]), listed.spot);
    let pool = &s.pools["linux"];
    assert_eq!(pool.zones, ["us-central1-a", "us-central1-b"]);
    assert!(pool.external_ip);
    assert_eq!(
        pool.source,
        PoolSource::Image {
            image: "projects/debian-cloud/global/images/family/debian-12".into(),
            disk_size_gb: 50,
            disk_type: "pd-balanced".into(),
        }
    );
    assert_eq!(s.zone_block, std::time::Duration::from_secs(900));
}

#[test]
fn a_price_override_wins_over_the_table() {
    let text = format!("{HEAD}{SECTION}[providers.gce.prices.spot]\n\"e2-standard-4\" = 0.05\n");
    let c = ebbtide_config::parse(&text, PROVIDERS).expect("valid");
    let s: &GceSettings = c
        .providers
        .get("gce")
        .expect("gce")
        .settings
        .get()
        .expect("settings");
    assert_eq!(s.spot_prices["e2-standard-4"], PricePerHour(Micros(50_000)));
}

#[test]
fn zones_outside_the_region_and_a_cluster_gce_cannot_spell_are_refused() {
    let text = format!("{HEAD}{SECTION}")
        .replace("\"us-central1-b\"]", "\"europe-west1-b\"]")
        .replace("cluster = \"ci-east\"", "cluster = \"CI_East\"");
    let (line, message) = one_issue(&text, "providers.gce.zones");
    assert_eq!(line, Some(line_of(&text, "europe-west1-b")));
    assert!(
        message.contains("not a zone of region us-central1"),
        "{message}"
    );
    let (_, message) = one_issue(&text, "server.cluster");
    assert!(message.contains("lowercase letter"), "{message}");
}

#[test]
fn a_machine_type_without_a_price_and_spot_without_a_spot_price_are_named() {
    let text = format!("{HEAD}{SECTION}").replace("\"n2d-standard-4\"]", "\"z9-custom-4\"]");
    let (line, message) = one_issue(&text, "providers.gce.pools.linux.machine_types");
    assert_eq!(line, Some(line_of(&text, "z9-custom-4")));
    assert!(
        message.contains("z9-custom-4 has no price in us-central1"),
        "{message}"
    );
    let with_od = format!("{text}[providers.gce.prices.on_demand]\n\"z9-custom-4\" = 0.2\n");
    let (_, message) = one_issue(&with_od, "pools[0].market.spot_percent");
    assert!(
        message.contains("z9-custom-4 has no spot price"),
        "{message}"
    );
}

#[test]
fn image_and_template_are_one_or_the_other_and_a_disk_has_limits() {
    let both = format!("{HEAD}{SECTION}instance_template = \"global/instanceTemplates/t\"\n");
    let (_, message) = one_issue(&both, "providers.gce.pools.linux.image");
    assert!(message.contains("not both"), "{message}");
    let neither = format!("{HEAD}{SECTION}").replace(
        "image = \"projects/debian-cloud/global/images/family/debian-12\"\n",
        "",
    );
    let (_, message) = one_issue(&neither, "providers.gce.pools.linux.image");
    assert!(message.contains("give the boot image"), "{message}");
    let tiny = format!("{HEAD}{SECTION}disk_size_gb = 4\n");
    let (line, message) = one_issue(&tiny, "providers.gce.pools.linux.disk_size_gb");
    assert_eq!(line, Some(line_of(&tiny, "disk_size_gb = 4")));
    assert!(message.contains("10 to 65536 GB"), "{message}");
    let template_disk = format!("{HEAD}{SECTION}").replace(
        "image = \"projects/debian-cloud/global/images/family/debian-12\"",
        "instance_template = \"global/instanceTemplates/t\"\ndisk_type = \"pd-ssd\"",
    );
    let (_, message) = one_issue(&template_disk, "providers.gce.pools.linux.disk_type");
    assert!(
        message.contains("comes from the instance template"),
        "{message}"
    );
}

#[test]
fn labels_and_network_tags_follow_gce_rules_and_ebbtide_labels_are_reserved() {
    let text = format!(
        "{HEAD}{SECTION}network_tags = [\"CI_worker\"]\n[providers.gce.pools.linux.labels]\n\"Team\" = \"build\"\n\"ebbtide-cluster\" = \"x\"\n"
    );
    let all = issues(&text);
    let paths: Vec<&str> = all.iter().map(|(_, p, _)| p.as_str()).collect();
    assert!(
        paths.contains(&"providers.gce.pools.linux.network_tags"),
        "{all:?}"
    );
    assert!(
        paths.contains(&"providers.gce.pools.linux.labels.Team"),
        "{all:?}"
    );
    assert!(
        paths.contains(&"providers.gce.pools.linux.labels.ebbtide-cluster"),
        "{all:?}"
    );
}

#[test]
fn a_pool_without_launch_settings_and_an_unknown_key_are_refused_where_they_are() {
    let text = format!("{HEAD}{SECTION}")
        .replace("[providers.gce.pools.linux]", "[providers.gce.pools.other]");
    let (_, message) = one_issue(&text, "pools[0].provider");
    assert!(
        message.contains("no [providers.gce.pools.linux] launch settings"),
        "{message}"
    );
    let typo = format!("{HEAD}{SECTION}").replace("project = ", "projcet = ");
    let all = issues(&typo);
    assert!(
        all.iter()
            .any(|(line, _, m)| *line == Some(line_of(&typo, "projcet")) && m.contains("projcet")),
        "{all:?}"
    );
}

#[test]
fn the_example_passes() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/gce.toml"
    ))
    .expect("examples/gce.toml");
    let text = text
        .replace(
            "api_key_env = \"EBBTIDE_KEY_PLATFORM\"",
            "api_key = \"platform-key-0123456789\"",
        )
        .replace(
            "api_key_env = \"EBBTIDE_KEY_ONCALL\"",
            "api_key = \"oncall-key-0123456789\"",
        );
    let c = ebbtide_config::parse(&text, PROVIDERS).unwrap_or_else(|e| panic!("{e}"));
    let s: &GceSettings = c
        .providers
        .get("gce")
        .expect("gce")
        .settings
        .get()
        .expect("settings");
    assert_eq!(s.pools["linux-large"].machine_types.len(), 3);
    assert_eq!(
        s.spot_prices["n2d-standard-4"],
        PricePerHour(Micros(42_500))
    );
}
