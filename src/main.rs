fn main() {
    println!("lpaf {}", env!("CARGO_PKG_VERSION"));
}
