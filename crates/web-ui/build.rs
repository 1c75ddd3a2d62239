//! rust-embed needs `ui/dist` to exist at compile time. Without a UI build the binary still
//! builds (the API works) and `/` says how to build the UI.
fn main() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/dist");
    if !dist.exists() {
        println!(
            "cargo:warning=ui/dist is missing: the binary will not contain the web UI (run: bash scripts/build-ui.sh)"
        );
        let _ = std::fs::create_dir_all(&dist);
    }
    // A new Vite build changes index.html (it names the hashed assets), which rust-embed tracks.
    println!("cargo:rerun-if-changed=../../ui/dist");
    println!("cargo:rerun-if-changed=../../ui/dist/index.html");
}
