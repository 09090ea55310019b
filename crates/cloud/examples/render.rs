//! Render a town file: `cargo run -p nuketown-cloud --example render -- TOWN`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: render TOWN");
    let text = std::fs::read_to_string(&path).expect("readable town");
    let town = nuketown_cloud::load(&text, nuketown_town::Format::of(path.as_ref()), &path)
        .unwrap_or_else(|e| panic!("{e}"));
    print!(
        "{}",
        nuketown_cloud::render_yaml(&town, Some("0123abc")).unwrap_or_else(|e| panic!("{e}"))
    );
}
