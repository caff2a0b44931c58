//! `ipam.resolvConf`: a resolv.conf turned into the result's `dns`, as the Go plugin reads it.

use std::path::Path;

use cni_common::result::Dns;

use crate::error::HostLocalError;

pub fn read(path: &Path) -> Result<Dns, HostLocalError> {
    let text = std::fs::read_to_string(path).map_err(|source| HostLocalError::ResolvConf {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        let key = words.next().unwrap_or_default();
        let rest: Vec<String> = words.map(str::to_owned).collect();
        match key {
            "nameserver" => dns.nameservers.extend(rest.into_iter().take(1)),
            "domain" => {
                if let Some(d) = rest.into_iter().next() {
                    dns.domain = d;
                }
            }
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_like_go() {
        let d = super::parse(
            "# comment\n; other\nnameserver 10.0.0.10\nnameserver fd00::10\n\
             domain a.example\ndomain b.example\nsearch x.local y.local\noptions ndots:5 rotate\n",
        );
        assert_eq!(d.nameservers, ["10.0.0.10", "fd00::10"]);
        assert_eq!(d.domain, "b.example");
        assert_eq!(d.search, ["x.local", "y.local"]);
        assert_eq!(d.options, ["ndots:5", "rotate"]);
    }
}
