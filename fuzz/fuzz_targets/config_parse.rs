//! Any stdin: the common config and every plugin's view of it parse or fail, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(del) = cni_common::NetConf::parse_with(data, cni_common::config::Strictness::ForDel) {
        let _ = cni_host_local::config::IpamConfig::load_for_release(&del, "K=V");
        let _ = cni_bridge::config::BridgeConf::load_for_del(&del, "K=V");
        let _ = cni_portmap::config::PortmapConf::load_for_del(&del);
        let _ = cni_flannel::config::FlannelConf::load_for_del(&del);
    }
    let Ok(conf) = cni_common::NetConf::parse(data) else { return };
    let _ = conf.prev_result();
    let _ = conf.valid_attachments();
    let _ = cni_host_local::config::IpamConfig::load(&conf, "IgnoreUnknown=1;IP=10.0.0.5");
    let _ = cni_host_local::config::IpamConfig::load_for_release(&conf, "");
    let _ = cni_bridge::config::BridgeConf::load(&conf, "IgnoreUnknown=1");
    let _ = cni_portmap::config::PortmapConf::load(&conf);
    if let Ok(f) = cni_flannel::config::FlannelConf::load(&conf) {
        if let Ok(env) = cni_flannel::subnet_env::parse(
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        ) {
            let _ = f.delegate_config(&env);
        }
    }
});
