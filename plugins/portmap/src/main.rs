fn main() {
    cni_common::skel::main(&cni_portmap::Portmap)
}
