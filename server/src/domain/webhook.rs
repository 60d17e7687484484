//! Outbound webhooks: which changes go out, to which endpoints, on what schedule, and which
//! addresses an endpoint may not point at.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{access::Permission, key::Key, string_enum};

string_enum! {
    /// What a webhook tells about. Each is written in the transaction of what it reports: the
    /// contact and consent ones with the change, `event.received` with the stored event, the
    /// email ones with the delivery's outcome or with the suppression a bounce or complaint
    /// reported later (by an inbound webhook) puts in place.
    WebhookEventType {
        ContactCreated => "contact.created",
        ContactUpdated => "contact.updated",
        ContactDeleted => "contact.deleted",
        ConsentChanged => "consent.changed",
        TopicChanged => "topic.changed",
        EventReceived => "event.received",
        EmailSent => "email.sent",
        EmailBounced => "email.bounced",
        EmailComplained => "email.complained",
    }
}

impl WebhookEventType {
    /// The webhook an audited change makes, if any: the audit log already records every change
    /// in its transaction, so webhooks follow it rather than each use case.
    pub fn for_audit_action(action: &str) -> Option<Self> {
        Some(match action {
            "contact.created" => Self::ContactCreated,
            "contact.updated" => Self::ContactUpdated,
            "contact.deleted" | "contact.erased" => Self::ContactDeleted,
            "consent.recorded" => Self::ConsentChanged,
            "subscription.changed" => Self::TopicChanged,
            _ => return None,
        })
    }
}

string_enum! {
    /// `failed`: every attempt of the schedule failed; an admin may replay it.
    WebhookDeliveryStatus {
        Pending => "pending",
        Delivered => "delivered",
        Failed => "failed",
    }
}

string_enum! {
    /// What an inbound webhook source may send: events and contact changes, or bounces and
    /// complaints for the suppression list.
    WebhookSourceKind {
        Events => "events",
        Suppressions => "suppressions",
    }
}

impl WebhookSourceKind {
    /// What a request signed by such a source may do.
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Self::Events => &[Permission::EventsWrite, Permission::ProfilesWrite],
            Self::Suppressions => &[Permission::MailSend],
        }
    }
}

/// An inbound webhook source as admins configured it; its secret is kept apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSource {
    pub key: Key,
    pub kind: WebhookSourceKind,
    pub created_at: DateTime<Utc>,
}

/// How far a signed request's timestamp may be from now (Standard Webhooks suggests 5 minutes).
pub const TIMESTAMP_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub url: url::Url,
    pub description: String,
    /// Empty: every type.
    pub event_types: Vec<WebhookEventType>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookEndpoint {
    pub fn wants(&self, event_type: WebhookEventType) -> bool {
        self.enabled && (self.event_types.is_empty() || self.event_types.contains(&event_type))
    }
}

/// The waits after each failed attempt, in units of the retry base (5 s by default): 5 s, 1 min,
/// 5 min, 30 min, 2 h, 6 h, 12 h, 24 h, 24 h — ten attempts over about three days.
const RETRY_STEPS: [u32; 9] = [1, 12, 60, 360, 1_440, 4_320, 8_640, 17_280, 17_280];

/// How long to wait after `attempts` failed attempts, or `None` when the schedule is spent.
/// `jitter` in [0, 1) spreads retries by up to a fifth, so that endpoints coming back are not
/// hit by every waiting message at once.
pub fn retry_after(attempts: u32, base: Duration, jitter: f64) -> Option<Duration> {
    let step = *RETRY_STEPS.get(usize::try_from(attempts.checked_sub(1)?).ok()?)?;
    Some(base.mul_f64(f64::from(step) * (1.0 + jitter.clamp(0.0, 1.0) / 5.0)))
}

/// The attempts a delivery gets before it fails.
pub const MAX_ATTEMPTS: u32 = RETRY_STEPS.len() as u32 + 1;

/// Whether an outbound request may go to `ip`: not loopback, private, link-local, shared
/// (carrier-grade NAT), documentation, multicast, unspecified or otherwise reserved space,
/// where a webhook URL could reach the server's own network (SSRF).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public_v4(mapped),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x0064 && ip.segments()[1] == 0xff9b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spans_about_three_days_then_stops() {
        let base = Duration::from_secs(5);
        assert_eq!(retry_after(0, base, 0.0), None);
        assert_eq!(retry_after(1, base, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(2, base, 0.0), Some(Duration::from_secs(60)));
        let total: Duration = (1..MAX_ATTEMPTS).filter_map(|attempt| retry_after(attempt, base, 0.0)).sum();
        assert!((Duration::from_secs(60 * 3600)..Duration::from_secs(80 * 3600)).contains(&total), "{total:?}");
        assert_eq!(retry_after(MAX_ATTEMPTS, base, 0.0), None);
        assert_eq!(retry_after(1, base, 0.999), Some(base.mul_f64(1.1998)));
    }

    #[test]
    fn private_and_reserved_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn audited_changes_map_to_their_webhooks() {
        assert_eq!(WebhookEventType::for_audit_action("contact.erased"), Some(WebhookEventType::ContactDeleted));
        assert_eq!(WebhookEventType::for_audit_action("subscription.changed"), Some(WebhookEventType::TopicChanged));
        assert_eq!(WebhookEventType::for_audit_action("user.signed_in"), None);
        let endpoint = WebhookEndpoint {
            id: Uuid::nil(),
            url: "https://example.com/hook".parse().unwrap(),
            description: String::new(),
            event_types: vec![WebhookEventType::ConsentChanged],
            enabled: true,
            disabled_reason: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        assert!(endpoint.wants(WebhookEventType::ConsentChanged));
        assert!(!endpoint.wants(WebhookEventType::ContactCreated));
    }
}
