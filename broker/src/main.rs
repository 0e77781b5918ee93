fn main() {
    eprintln!("sluice: not yet built");
    std::process::exit(2);
}
