//! The `tern` binary. The daemon (`tern agent`) arrives with issue 3; until
//! then this prints what exists and where to look.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("version") | Some("--version") | Some("-v") => {
            println!("Tern v{}", env!("CARGO_PKG_VERSION"));
        }
        _ => {
            eprintln!(
                "tern v{}: the daemon (`tern agent`) is not built yet.\n\
                 What exists today is the core and its simulator:\n  \
                 cargo run --release -p sim-tests --bin chaos -- --seeds 20",
                env!("CARGO_PKG_VERSION")
            );
            std::process::exit(1);
        }
    }
}
