//! Values written as in Docker's CLI: sizes (`512m`), CPU counts (`1.5`), ulimits
//! (`"soft:hard"`) and GPU requests (`--gpus` syntax), with their serde parsers.

use serde::{Deserialize, Deserializer, de::Error};

#[derive(Deserialize)]
#[serde(untagged)]
enum Value {
    Int(i64),
    Float(f64),
    Text(String),
}

/// GPUs to request from the engine, parsed from the Docker CLI's `--gpus` syntax: `all`, a
/// count, or comma-separated `count=`, `device=`, `driver=` and `capabilities=` fields, a
/// list value in double quotes (`"device=0,1",capabilities=compute`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GpuRequest {
    /// -1: all.
    pub count: Option<i64>,
    pub device_ids: Vec<String>,
    pub driver: Option<String>,
    /// Default `["gpu"]`.
    pub capabilities: Vec<String>,
}

/// One `ulimit` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// `512m`, `1.5g`, `1024` (bytes).
pub(crate) fn parse_bytes(text: &str) -> Result<i64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let factor: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("{text:?} is not a size (use b, k, m, g or t)")),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    if n.is_nan() || n < 0.0 || n * factor > i64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok((n * factor) as i64)
}

pub(crate) fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Int(n) if n >= 0 => Ok(Some(n)),
        Value::Text(t) => parse_bytes(&t).map(Some).map_err(D::Error::custom),
        _ => Err(D::Error::custom(
            "expected a size like \"512m\" or a number of bytes",
        )),
    }
}

/// `ulimit`: name → `"soft[:hard]"` or a number (soft = hard).
pub(crate) fn ulimits<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ulimit>, D::Error> {
    let map = std::collections::BTreeMap::<String, Value>::deserialize(d)?;
    map.into_iter()
        .map(|(name, value)| {
            let text = match value {
                Value::Int(n) => n.to_string(),
                Value::Text(t) => t,
                Value::Float(_) => String::new(),
            };
            let number = |t: &str| t.trim().parse::<i64>().ok().filter(|n| *n >= -1);
            let (soft, hard) = match text.split_once(':') {
                Some((soft, hard)) => (number(soft), number(hard)),
                None => (number(&text), number(&text)),
            };
            match (soft, hard) {
                (Some(soft), Some(hard)) if name.chars().all(|c| c.is_ascii_alphabetic()) => {
                    Ok(Ulimit { name, soft, hard })
                }
                _ => Err(D::Error::custom(format!(
                    "ulimit {name:?}: expected \"soft[:hard]\" or a number"
                ))),
            }
        })
        .collect()
}

/// `gpus`: see [`GpuRequest`].
pub(crate) fn parse_gpus(text: &str) -> Result<GpuRequest, String> {
    let mut request = GpuRequest::default();
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    for field in split_quoted(text)? {
        let (key, value) = field.split_once('=').unwrap_or(("count", &field));
        match key.trim() {
            "count" => {
                let count = match value.trim() {
                    "all" => -1,
                    n => n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("gpus: count {n:?} is neither \"all\" nor a number above 0")
                    })?,
                };
                request.count = Some(count);
            }
            "device" => request.device_ids = list(value),
            "driver" => request.driver = Some(value.trim().to_owned()),
            "capabilities" => request.capabilities = list(value),
            other => {
                return Err(format!(
                    "gpus: unknown field {other:?} (count, device, driver, capabilities)"
                ));
            }
        }
    }
    if request.count.is_some() && !request.device_ids.is_empty() {
        return Err("gpus: set either a count or devices, not both".into());
    }
    if request.count.is_none() && request.device_ids.is_empty() {
        return Err(format!(
            "gpus: {text:?} asks for no GPU (give a count, \"all\" or devices)"
        ));
    }
    if request.capabilities.is_empty() {
        request.capabilities = vec!["gpu".into()];
    }
    Ok(request)
}

/// Splits at commas outside double quotes, as a CSV field list; the quotes go.
fn split_quoted(text: &str) -> Result<Vec<String>, String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    if quoted {
        return Err(format!("gpus: unbalanced quote in {text:?}"));
    }
    fields.push(field);
    Ok(fields
        .into_iter()
        .filter(|f| !f.trim().is_empty())
        .collect())
}

pub(crate) fn gpus<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GpuRequest>, D::Error> {
    match Value::deserialize(d)? {
        Value::Text(t) => parse_gpus(&t).map(Some).map_err(D::Error::custom),
        Value::Int(n) => parse_gpus(&n.to_string())
            .map(Some)
            .map_err(D::Error::custom),
        Value::Float(_) => Err(D::Error::custom(
            "gpus: expected \"all\", a count or fields",
        )),
    }
}

/// CPUs as nano-CPUs: `1.5` or `"1.5"`.
pub(crate) fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let n = match Value::deserialize(d)? {
        Value::Int(n) => n as f64,
        Value::Float(f) => f,
        Value::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| D::Error::custom(format!("{t:?} is not a number of CPUs")))?,
    };
    if !(n > 0.0 && n <= 4096.0) {
        return Err(D::Error::custom("cpus must be between 0 and 4096"));
    }
    Ok(Some((n * 1e9) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_parse_like_the_docker_cli() {
        let gpu = |count, devices: &[&str], driver: Option<&str>, caps: &[&str]| GpuRequest {
            count,
            device_ids: devices.iter().map(|d| d.to_string()).collect(),
            driver: driver.map(str::to_owned),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
        };
        assert_eq!(parse_gpus("all"), Ok(gpu(Some(-1), &[], None, &["gpu"])));
        assert_eq!(parse_gpus("2"), Ok(gpu(Some(2), &[], None, &["gpu"])));
        assert_eq!(
            parse_gpus(r#""device=0,GPU-3a23c669",driver=nvidia,"capabilities=compute,utility""#),
            Ok(gpu(
                None,
                &["0", "GPU-3a23c669"],
                Some("nvidia"),
                &["compute", "utility"]
            ))
        );
        for bad in [
            "",
            "0",
            "-1",
            "some",
            "count=all,device=0",
            "driver=nvidia",
            "colour=green,all",
            "\"device=0",
        ] {
            assert!(parse_gpus(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("64MB"), Ok(64 << 20));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1x").is_err());
    }
}
