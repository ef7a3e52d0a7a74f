fn main() {
    if let Err(e) = lpaf::cli::main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
