use super::*;
use crate::version::Version;

fn sample() -> CniResult {
    let net = |s: &str| cidr::parse(s).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    CniResult {
        dns: Dns {
            domain: "example.org".into(),
            nameservers: vec!["10.1.0.10".into()],
            options: vec!["ndots:5".into()],
            search: vec!["svc.cluster.local".into()],
        },
        interfaces: vec![
            Interface {
                name: "cni0".into(),
                mac: "aa:bb:cc:dd:ee:01".into(),
                ..Interface::default()
            },
            Interface {
                name: "veth1234abcd".into(),
                mac: "aa:bb:cc:dd:ee:02".into(),
                ..Interface::default()
            },
            Interface {
                name: "eth0".into(),
                mac: "aa:bb:cc:dd:ee:03".into(),
                mtu: Some(1450),
                sandbox: "/var/run/netns/pod".into(),
                ..Interface::default()
            },
        ],
        ips: vec![
            IpConfig {
                address: net("10.1.17.5/24"),
                gateway: Some(ip("10.1.17.1")),
                interface: Some(2),
            },
            IpConfig {
                address: net("10.1.18.5/24"),
                gateway: None,
                interface: Some(2),
            },
            IpConfig {
                address: net("fd00:17::5/64"),
                gateway: Some(ip("fd00:17::1")),
                interface: Some(2),
            },
        ],
        routes: vec![
            Route::new(net("10.1.0.0/16"), Some(ip("10.1.17.1"))),
            Route::new(net("::/0"), Some(ip("fd00:17::1"))),
            Route {
                mtu: Some(1400),
                ..Route::new(net("0.0.0.0/0"), None)
            },
        ],
    }
}

#[test]
fn encode_each_version() {
    for v in Version::ALL {
        let out = sample().encode(v).unwrap();
        insta::assert_snapshot!(format!("encode_{v}"), out);
    }
}

#[test]
fn empty_result_shapes() {
    let empty = CniResult::default();
    assert_eq!(
        empty.encode(Version::V1_0_0).unwrap(),
        "{\n    \"cniVersion\": \"1.0.0\"\n}"
    );
    assert_eq!(
        empty.encode(Version::V0_4_0).unwrap(),
        "{\n    \"cniVersion\": \"0.4.0\",\n    \"dns\": {}\n}"
    );
    let e = empty.encode(Version::V0_2_0).unwrap_err();
    assert_eq!(e.code(), 1);
}

#[test]
fn round_trips_keep_what_each_version_can_hold() {
    let r = sample();
    for v in Version::ALL {
        let text = r.encode(v).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let back = CniResult::decode(&value, Version::V0_1_0).unwrap();
        // Re-encoding the decoded value in the same version is byte-identical.
        assert_eq!(back.encode(v).unwrap(), text, "{v}");
        match v.result_shape() {
            ResultShape::V100 => assert_eq!(back, r),
            ResultShape::V040 => {
                assert_eq!(back.ips, r.ips);
                assert_eq!(back.interfaces.len(), 3);
                assert_eq!(back.interfaces[2].mtu, None);
                assert_eq!(back.routes[2].mtu, None);
            }
            ResultShape::Legacy => {
                assert_eq!(back.ips.len(), 2);
                assert!(back.interfaces.is_empty());
                // v4 routes first, then v6.
                let dsts: Vec<String> = back.routes.iter().map(|r| r.dst.to_string()).collect();
                assert_eq!(dsts, ["10.1.0.0/16", "0.0.0.0/0", "::/0"]);
            }
        }
    }
}

#[test]
fn old_label_on_a_new_shape_is_read_leniently() {
    // What the Go loopback prints for a 0.2.0 config.
    let value = serde_json::json!({"cniVersion": "0.2.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": "/ns"}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}]});
    let r = CniResult::decode(&value, Version::V0_2_0).unwrap();
    assert_eq!(r.ips[0].address.to_string(), "127.0.0.1/8");
    assert!(r.encode(Version::V0_2_0).unwrap().contains("\"ip4\""));
}

#[test]
fn legacy_input_upconverts() {
    let value = serde_json::json!({
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1",
                "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "fd00::2/64", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
        "dns": {"nameservers": ["1.1.1.1"]}
    });
    let r = CniResult::decode(&value, Version::V1_1_0).unwrap();
    insta::assert_snapshot!(r.encode(Version::V1_1_0).unwrap());
    insta::assert_snapshot!(r.encode(Version::V0_3_1).unwrap());
}

#[test]
fn missing_version_uses_fallback_and_bad_input_is_code_6() {
    let v = serde_json::json!({"ip4": {"ip": "10.0.0.2/24"}});
    assert_eq!(CniResult::decode(&v, Version::V0_2_0).unwrap().ips.len(), 1);
    // Read as 1.x, `ip4` is unknown and ignored.
    assert!(
        CniResult::decode(&v, Version::V1_0_0)
            .unwrap()
            .ips
            .is_empty()
    );
    for bad in [
        serde_json::json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}),
        serde_json::json!({"cniVersion": "1.0.0", "ips": "x"}),
        serde_json::json!({"cniVersion": 1}),
        serde_json::json!({"cniVersion": "0.4.0", "ips": [{"address": "1.2.3.4/99"}]}),
    ] {
        let e = CniResult::decode(&bad, Version::V1_0_0).unwrap_err();
        assert_eq!(e.code(), 6, "{bad}");
    }
    let e = CniResult::decode(&serde_json::json!({"cniVersion": "9.9.9"}), Version::V1_0_0);
    assert_eq!(e.unwrap_err().code(), 1);
}
