//! Render a town of 1,000 cloud agents (docs/benchmarks.md, "Cloud render"):
//! the typed manifests alone, and the YAML Argo CD reads.
//!
//! `cargo bench -p nuketown-cloud --bench render`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use nuketown_town::{Format, Town};

/// A town of `n` agents over ten namespaces, each with two persisted
/// directories and a file, an identity and an egress allow-list, as TOML.
pub fn town_text(n: usize) -> String {
    let mut text = String::from("domain = \"example.org\"\nhumanUser = \"josh\"\n");
    for i in 0..n {
        let tier = ["small", "standard", "large"][i % 3];
        text.push_str(&format!(
            "[agents.agent{i:04}]\nuid = {uid}\ndescription = \"Agent number {i}.\"\n\
             persist.directories = [\"dev\", \".local/share/direnv\"]\npersist.files = [\".bash_history\"]\n\
             claudeCode.enable = true\n\
             [agents.agent{i:04}.cloud]\nenable = true\nresources = \"{tier}\"\nnamespace = \"team{ns}\"\n\
             image = \"nix:0/nix/store/00000000000000000000000000000000-agent{i:04}.tar\"\n\
             identity.gcpServiceAccount = \"agent{i:04}@p.iam.gserviceaccount.com\"\n\
             egress = [{{ cidr = \"0.0.0.0/0\", ports = [443] }}]\n",
            uid = 1100 + i,
            ns = i % 10,
        ));
    }
    text
}

/// [`town_text`], loaded.
pub fn town(n: usize) -> Town {
    nuketown_cloud::load(&town_text(n), Format::Toml, "bench").expect("the bench town is valid")
}

fn bench(c: &mut Criterion) {
    let text = town_text(1000);
    // For timing the CLI on the same town: `time nuketown cloud render <file>`.
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloud-town-1000.toml");
    std::fs::write(&file, &text).expect("writable target dir");
    eprintln!("the 1,000-agent town: {}", file.display());
    let town = town(1000);
    let mut g = c.benchmark_group("cloud render, 1000 agents");
    g.sample_size(20);
    g.bench_function("render (typed manifests)", |b| {
        b.iter(|| nuketown_cloud::render(black_box(&town), Some("r")).unwrap())
    });
    g.bench_function("render_yaml (multi-document YAML)", |b| {
        b.iter(|| nuketown_cloud::render_yaml(black_box(&town), Some("r")).unwrap())
    });
    g.bench_function("load + render_yaml (TOML text to YAML, as the CLI)", |b| {
        b.iter(|| {
            let town = nuketown_cloud::load(black_box(&text), Format::Toml, "bench").unwrap();
            nuketown_cloud::render_yaml(&town, Some("r")).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
