//! flanneld: see the library (`flanneld::main_with`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(flanneld::main_with(&args, &|k| std::env::var(k).ok()));
}
