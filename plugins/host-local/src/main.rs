fn main() {
    cni_common::skel::main(&cni_host_local::HostLocal)
}
