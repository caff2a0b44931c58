fn main() {
    cni_common::skel::main(&cni_flannel::Flannel::new())
}
