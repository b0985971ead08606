//! Rebuilds the edge when the web client's committed build changes:
//! `include_dir!` embeds `web/dist`, and cargo does not see those files
//! unless told.

fn main() {
    println!("cargo:rerun-if-changed=../../web/dist");
}
