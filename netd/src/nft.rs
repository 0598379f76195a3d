//! nftables through its JSON interface: netd builds whole rulesets as
//! `nft -j` commands and hands each change to one `nft -j -f -` run, which
//! the kernel applies as one transaction (all of it or none of it). This is
//! the one subprocess netd runs, chosen deliberately: libnftables' JSON
//! schema is the stable, documented interface, and a batch per change keeps
//! every ruleset atomic. Inside a router, the subprocess enters the router's
//! namespace before it execs.

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A batch of commands for one transaction, each kept as its JSON text
/// (large sets are rendered once, not rebuilt as value trees).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub cmds: Vec<String>,
}

impl Batch {
    pub fn push(&mut self, v: Value) {
        self.cmds.push(v.to_string());
    }

    /// Adds elements (each already JSON text) to a named set.
    pub fn add_elements(&mut self, family: &str, table: &str, name: &str, elems: &[String]) {
        let mut s = String::with_capacity(96 + elems.iter().map(|e| e.len() + 1).sum::<usize>());
        s.push_str(&format!(
            r#"{{"add":{{"element":{{"family":"{family}","table":"{table}","name":"{name}","elem":["#
        ));
        for (i, e) in elems.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(e);
        }
        s.push_str("]}}}");
        self.cmds.push(s);
    }

    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Replaces a table wholesale: create it (so the delete cannot fail),
    /// delete it, create it again, all inside this one transaction.
    pub fn replace_table(&mut self, family: &str, name: &str) {
        self.push(json!({"add": {"table": {"family": family, "name": name}}}));
        self.push(json!({"delete": {"table": {"family": family, "name": name}}}));
        self.push(json!({"add": {"table": {"family": family, "name": name}}}));
    }

    /// Removes a table if it exists.
    pub fn drop_table(&mut self, family: &str, name: &str) {
        self.push(json!({"add": {"table": {"family": family, "name": name}}}));
        self.push(json!({"delete": {"table": {"family": family, "name": name}}}));
    }

    pub fn to_json(&self) -> String {
        let mut s =
            String::with_capacity(16 + self.cmds.iter().map(|c| c.len() + 1).sum::<usize>());
        s.push_str(r#"{"nftables":["#);
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(c);
        }
        s.push_str("]}");
        s
    }

    /// Applies the batch in the current namespace, or inside `netns`.
    pub async fn apply(&self, netns: Option<&Path>) -> Result<()> {
        if self.cmds.is_empty() {
            return Ok(());
        }
        if !installed() {
            return Err(Error::Nft(NOT_INSTALLED.into()));
        }
        let doc = self.to_json();
        let ns = netns.map(|p| p.to_path_buf());
        tokio::task::spawn_blocking(move || run(&doc, ns.as_deref()))
            .await
            .map_err(|e| Error::Nft(format!("nft task: {e}")))?
    }
}

/// What a transaction fails with when `nft` is not on PATH.
pub const NOT_INSTALLED: &str = "nft is not installed (apt-get install nftables)";

/// Whether `nft` is on PATH (looked up each time: it may be installed
/// while netd runs).
pub fn installed() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            std::fs::metadata(d.join("nft")).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

fn run(doc: &str, netns: Option<&Path>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("nft");
    cmd.args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let ns_file = match netns {
        Some(p) => Some(std::fs::File::open(p).map_err(|e| {
            Error::FailedPrecondition(format!("network namespace {}: {e}", p.display()))
        })?),
        None => None,
    };
    if let Some(f) = &ns_file {
        let fd = f.as_raw_fd();
        // SAFETY: setns is async-signal-safe; it runs in the forked child
        // before exec and changes only the child's namespace.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Nft(NOT_INSTALLED.into()),
        _ => Error::Nft(format!("cannot run nft: {e}")),
    })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(doc.as_bytes())
        .map_err(|e| Error::Nft(format!("writing to nft: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nft(format!("nft: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Nft(format!(
            "nft refused the transaction: {}",
            msg.lines().take(6).collect::<Vec<_>>().join(" | ")
        )));
    }
    Ok(())
}

// Small builders for the JSON expressions netd uses.

pub fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

pub fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

pub fn ct(key: &str) -> Value {
    json!({"ct": {"key": key}})
}

pub fn eq(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

pub fn ne(left: Value, right: Value) -> Value {
    json!({"match": {"op": "!=", "left": left, "right": right}})
}

pub fn within(left: Value, right: Value) -> Value {
    json!({"match": {"op": "in", "left": left, "right": right}})
}

pub fn set(items: Vec<Value>) -> Value {
    json!({"set": items})
}

pub fn concat(items: Vec<Value>) -> Value {
    json!({"concat": items})
}

pub fn prefix(net: &ipnet::IpNet) -> Value {
    if net.prefix_len() == net.max_prefix_len() {
        json!(net.addr().to_string())
    } else {
        json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
    }
}

pub fn range(a: u16, b: u16) -> Value {
    if a == b {
        json!(a)
    } else {
        json!({"range": [a, b]})
    }
}

pub fn jump(chain: &str) -> Value {
    json!({"jump": {"target": chain}})
}

pub fn goto(chain: &str) -> Value {
    json!({"goto": {"target": chain}})
}

pub fn verdict(v: &str) -> Value {
    json!({ v: null })
}

pub fn rule(family: &str, table: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": family, "table": table, "chain": chain, "expr": expr}}})
}

pub fn chain(family: &str, table: &str, name: &str) -> Value {
    json!({"add": {"chain": {"family": family, "table": table, "name": name}}})
}

pub fn base_chain(
    family: &str,
    table: &str,
    name: &str,
    kind: &str,
    hook: &str,
    prio: i32,
) -> Value {
    json!({"add": {"chain": {"family": family, "table": table, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
}

/// A named set; `ty` is one type name or several (a concatenation).
pub fn named_set(family: &str, table: &str, name: &str, ty: Value, interval: bool) -> Value {
    let mut s = json!({"family": family, "table": table, "name": name, "type": ty});
    if interval {
        s["flags"] = json!(["interval"]);
    }
    json!({"add": {"set": s}})
}

pub fn flush_set(family: &str, table: &str, name: &str) -> Value {
    json!({"flush": {"set": {"family": family, "table": table, "name": name}}})
}
