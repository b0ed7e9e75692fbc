//! Host facts recorded with every result: host name, CPU, memory, OS, kernel.

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

use crate::results::Host;

/// The CPU model from `/proc/cpuinfo` text: the first `model name` (x86, most others), else
/// `Model` / `Hardware` / `cpu model` (ARM boards, MIPS).
pub(crate) fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "Hardware", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
            })
        })
}

fn read_trimmed(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Collects the facts of this host. Figures that cannot be
/// found are `unknown`, 0 or `None`; this never fails.
pub fn host_info() -> Host {
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .ok();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| parse_cpu_model(&t))
        .or_else(|| {
            sys.as_ref()?
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_string())
                .filter(|b| !b.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let cpu_logical = sys
        .as_ref()
        .map(|s| s.cpus().len())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let ram_total_bytes = super::system_memory()
        .map(|(total, _)| total)
        .or_else(|| sys.as_ref().map(System::total_memory))
        .unwrap_or(0);
    let os = System::long_os_version()
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            let name = System::name().ok()?;
            Some(match System::os_version() {
                Ok(v) => format!("{name} {v}"),
                Err(_) => name,
            })
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let kernel = System::kernel_version()
        .ok()
        .or_else(|| read_trimmed("/proc/sys/kernel/osrelease"))
        .unwrap_or_else(|| "unknown".to_string());
    let hostname = System::host_name()
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| read_trimmed("/proc/sys/kernel/hostname"))
        .unwrap_or_else(|| "unknown".to_string());
    Host {
        hostname,
        cpu_model,
        cpu_logical,
        cpu_physical: System::physical_core_count().ok().filter(|&n| n > 0),
        ram_total_bytes,
        os,
        kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::RunMetadata;
    use std::collections::BTreeSet;

    #[test]
    fn cpu_model_from_cpuinfo() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n";
        assert_eq!(
            parse_cpu_model(x86).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        let pi = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(
            parse_cpu_model(pi).as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert_eq!(parse_cpu_model("processor\t: 0\nmodel name\t:\n"), None);
    }

    /// A [`Host`] flattened into [`RunMetadata`] gives the result files' host fields: the same
    /// seven names at the top level, the same values; and it reads back from such a file.
    #[test]
    fn flattens_into_the_result_files_host_fields() {
        let h = Host {
            hostname: "box".into(),
            cpu_model: "Test CPU".into(),
            cpu_logical: 16,
            cpu_physical: Some(8),
            ram_total_bytes: 64 << 30,
            os: "Linux (Test 1)".into(),
            kernel: "6.8.0".into(),
        };
        let meta = RunMetadata {
            run_id: "r1".into(),
            server: "http://127.0.0.1:11434".into(),
            host: h.clone(),
            ..RunMetadata::default()
        };
        let meta_json = serde_json::to_value(&meta).unwrap();
        let host = serde_json::to_value(&h).unwrap();
        let host = host.as_object().unwrap();
        let keys: BTreeSet<&str> = host.keys().map(String::as_str).collect();
        let want = [
            "hostname",
            "cpu_model",
            "cpu_logical",
            "cpu_physical",
            "ram_total_bytes",
            "os",
            "kernel",
        ];
        assert_eq!(keys, BTreeSet::from(want));
        for (k, v) in host {
            assert_eq!(&meta_json[k], v, "{k}");
        }
        assert!(meta_json.get("host").is_none(), "{meta_json}");
        let back: RunMetadata = serde_json::from_value(meta_json).unwrap();
        assert_eq!(back.host, h);
        // A record that holds fewer host facts reads with the rest at their defaults.
        let few: Host =
            serde_json::from_str(r#"{"cpu_model":"X","cpu_logical":2,"ram_total_bytes":1}"#)
                .unwrap();
        assert_eq!((few.cpu_model.as_str(), few.cpu_physical), ("X", None));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn live_host_facts() {
        let h = host_info();
        assert!(h.cpu_logical >= 1);
        assert!(h.cpu_physical.is_none_or(|p| p >= 1 && p <= h.cpu_logical));
        let (total, _) = super::super::system_memory().unwrap();
        assert_eq!(h.ram_total_bytes, total);
        assert_ne!(h.cpu_model, "unknown");
        assert_eq!(
            h.kernel,
            read_trimmed("/proc/sys/kernel/osrelease").unwrap()
        );
        assert!(!h.hostname.is_empty() && !h.os.is_empty());
    }
}
