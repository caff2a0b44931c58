//! `install-conf SRC DEST` or `install-conf SRC... DIR/`: see the library.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(install_conf::main_with(&args));
}
