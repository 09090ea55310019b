//! The Argo CD plugin's generate step, as deploy/argocd/plugin.yaml holds it
//! (shared by the tests that run it: cloud.rs locally, k8s_argocd.rs into a
//! real API server).

use std::path::Path;

/// The generate script of deploy/argocd/plugin.yaml: the block under `args: - |`.
pub fn plugin_script() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/argocd/plugin.yaml");
    let yaml = std::fs::read_to_string(path).unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "- |").skip(1);
    let first = lines.next().unwrap();
    let indent = first.len() - first.trim_start().len();
    let mut script = format!("{}\n", &first[indent..]);
    for l in lines {
        if !l.trim().is_empty() && l.len() - l.trim_start().len() < indent {
            break;
        }
        script.push_str(l.get(indent..).unwrap_or(""));
        script.push('\n');
    }
    script
}
