fn main() {
    cni_common::skel::main(&cni_loopback::Loopback::netlink())
}
