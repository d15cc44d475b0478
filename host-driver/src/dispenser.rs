//! The card dispenser (party D): issues cards (Fig. 4B) and loads value (Fig. 4C, and the
//! online recharge with nonces of Fig. 7), relaying to the center. It talks to the card only in
//! APDUs and checks what the card shows it in software (a dispenser is not the terminal); the
//! center checks everything again before it signs.

use crate::apdu::{sw, CardLink};
use crate::card::{CardClient, CardError, LinkKind, SecureLink};
use crate::center::{Center, LoadRequest, RechargeRequest};
use crate::messages::*;

/// A card's answer, as a refusal naming the step.
fn card_fail(step: &'static str, e: CardError) -> Fail {
    match e {
        CardError::Status(s) if s == sw::SM_INCORRECT || s == sw::SM_REPLAY || s == sw::SM_MISSING => {
            Fail::refused(step, format!("cipher channel: {}", CardError::Status(s)))
        }
        CardError::Status(s) if s == sw::MEMORY_FAILURE => {
            Fail::refused(step, "the card's write was interrupted; it holds the old state or the new one")
        }
        e => Fail::refused(step, e.to_string()),
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Issued {
    pub idu: u64,
    pub bits: usize,
    pub expires: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Loaded {
    pub idu: u64,
    pub flow: &'static str,
    pub v_old: u64,
    pub v_new: u64,
}

/// Which load flow to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadFlow {
    /// Fig. 4C: SA(V * IDU), bound to the card's state sequence number.
    Fig4c,
    /// Fig. 7: online recharge with the dispenser's Y and the card's X.
    Fig7,
}

pub struct Dispenser {
    /// IDC: the dispenser / issuing company.
    pub idc: u64,
}

impl Dispenser {
    pub fn new(idc: u64) -> Self {
        Dispenser { idc }
    }

    /// Fig. 4B: the card makes its key pair, the center certifies nU under a new IDU, and the
    /// card checks the certificate with nA before storing it. Then Fig. 8: (KU, KO) go to the
    /// card sealed under its manufacturing key Ktemp, the only use of Ktemp.
    pub fn issue_card(&self, center: &mut Center, card: &mut dyn CardLink, bits: usize, now: u64) -> Result<Issued, Fail> {
        let mut c = CardClient::new(card);
        let nu = c.generate_key(bits).map_err(|e| card_fail("GENERATE KEY", e))?;
        let cert = center.certify_card(&nu, now)?;
        c.personalize(&center.master_public(), &cert).map_err(|e| card_fail("PERSONALIZE", e))?;
        c.deliver_keys(&center.card_key_delivery(cert.id)?).map_err(|e| card_fail("DELIVER KEYS", e))?;
        Ok(Issued { idu: cert.id, bits, expires: cert.expires })
    }

    /// Fig. 10: a card without a signing key: the center signs SA(IDU), the card checks it
    /// with nA and stores it; then (KU, KO) under Ktemp as for any card.
    pub fn issue_keyless_card(&self, center: &mut Center, card: &mut dyn CardLink, now: u64) -> Result<Issued, Fail> {
        let mut c = CardClient::new(card);
        let cert = center.certify_keyless_card(now)?;
        c.personalize_keyless(&center.master_public(), &cert).map_err(|e| card_fail("PERSONALIZE", e))?;
        c.deliver_keys(&center.card_key_delivery(cert.id)?).map_err(|e| card_fail("DELIVER KEYS", e))?;
        Ok(Issued { idu: cert.id, bits: 0, expires: cert.expires })
    }

    /// OPEN SESSION on the D <-> U link under KU, which the center supplies for the card's IDU.
    fn link<'a>(center: &Center, card: &'a mut dyn CardLink) -> Result<SecureLink<'a>, Fail> {
        let mut key_err = None;
        let r = SecureLink::open(card, LinkKind::Dispenser, |idu| {
            center.card_link_key(idu).map_err(|e| {
                let msg = e.to_string();
                key_err = Some(e);
                CardError::Malformed(msg)
            })
        });
        match (r, key_err) {
            (Ok(l), _) => Ok(l),
            (Err(_), Some(e)) => Err(e.into()),
            (Err(e), None) => Err(card_fail("OPEN SESSION", e)),
        }
    }
    /// Figs. 13-17 at issue: the center authorizes credit service until `expires` and the card
    /// stores it with its setting number Ns (which never leaves the card again).
    pub fn setup_credit(&self, center: &mut Center, card: &mut dyn CardLink, ns: &[u8], expires: u64, now: u64) -> Result<u64, Fail> {
        check_secret(ns, "setting number").map_err(|e| crate::Error::usage(e.0))?;
        let mut link = Self::link(center, card)?;
        let mut c = CardClient::new(&mut link);
        let (cert, _) = self.card_certificate(center, &mut c, now)?;
        let CardIdentity::Keyed(cert) = cert else {
            return Err(Fail::refused("credit", format!("card {} has no signing key (Fig. 10); credit cards need one", cert.id())));
        };
        let cc = center.credit_certificate(&cert, expires, now)?;
        c.credit_setup(ns, &cc).map_err(|e| card_fail("CREDIT SETUP", e))?;
        Ok(cert.id)
    }

    /// U -> D: nU, IDU, SA(nU * IDU); D verifies with nA.
    fn card_certificate(&self, center: &Center, c: &mut CardClient, now: u64) -> Result<(CardIdentity, MasterPublic), Fail> {
        let cert = c.identity().map_err(|e| card_fail("GET CERTIFICATE", e))?;
        // The master key the card was issued under (the current one, or one retired by a
        // rollover and still trusted).
        let master = center.master_for(cert.master_index(), now)?;
        let check = cert.check(&master).map_err(|e| Fail::refused("card certificate", e.0))?;
        check.verify_sw().map_err(|e| Fail::refused("card certificate", format!("{}: {e}", check.what)))?;
        Ok((cert, master))
    }

    /// Adds `amount` to the card's value by `flow`.
    pub fn load(&self, center: &mut Center, card: &mut dyn CardLink, amount: u64, flow: LoadFlow, now: u64) -> Result<Loaded, Fail> {
        if amount == 0 {
            return Err(Fail::Error(crate::Error::usage("amount 0: a load adds at least 1 minor unit")));
        }
        match flow {
            LoadFlow::Fig4c => self.load_fig4c(center, card, amount, now),
            LoadFlow::Fig7 => self.recharge_fig7(center, card, amount, now),
        }
    }

    /// Fig. 4C. The dispenser first has the card show its value against a fresh challenge R
    /// (so the center can add to a value it has checked), then D -> U: V', SA(V' * IDU), IDC.
    fn load_fig4c(&self, center: &mut Center, card: &mut dyn CardLink, amount: u64, now: u64) -> Result<Loaded, Fail> {
        let mut link = Self::link(center, card)?;
        let mut c = CardClient::new(&mut link);
        let (cert, master) = self.card_certificate(center, &mut c, now)?;
        let r = nonce()?;
        let answer = c.read_value(&r).map_err(|e| card_fail("READ VALUE", e))?;
        let idu = cert.id();
        let mut checks = Vec::new();
        match cert.key() {
            Some(key) => checks.push(Check { what: "SU(R * X * V)", key: key.clone(), msg: card_value_body(idu, &r, &answer.x, answer.value), sig: answer.su.clone() }),
            // Fig. 10: no card signature; the provenance vouches for the value.
            None if answer.su.is_empty() && answer.x.is_empty() => {}
            None => return Err(Fail::refused("card value", format!("card {idu} has no signing key but sent a signature"))),
        }
        checks.extend(answer.provenance.checks(&master, idu, answer.value).map_err(|e| Fail::refused("provenance", e.0))?);
        verify_all_sw(&checks).map_err(|e| Fail::refused("card value", e))?;
        let v_old = answer.value;
        let seq = answer.seq;
        let req = LoadRequest { cert: cert.clone(), idc: self.idc, r, answer, amount };
        let (v_new, sa) = center.authorize_load(&req, now)?;
        c.load(self.idc, seq, v_new, &sa).map_err(|e| card_fail("LOAD", e))?;
        Ok(Loaded { idu, flow: "fig4c", v_old, v_new })
    }

    /// Fig. 7. D -> U: Y, V', IDC; U -> D: X, SU(Y * X * V * V') and the provenance of V; D
    /// verifies and relays to C; C -> D -> U: SA(Y * X * V' * IDU); U verifies and stores.
    fn recharge_fig7(&self, center: &mut Center, card: &mut dyn CardLink, amount: u64, now: u64) -> Result<Loaded, Fail> {
        let mut link = Self::link(center, card)?;
        let mut c = CardClient::new(&mut link);
        let (cert, master) = self.card_certificate(center, &mut c, now)?;
        let CardIdentity::Keyed(cert) = cert else {
            return Err(Fail::refused("recharge", format!("card {} has no signing key (Fig. 10): load it by Fig. 4C", cert.id())));
        };
        let status = c.status().map_err(|e| card_fail("GET STATUS", e))?;
        let v_new = status
            .value
            .checked_add(amount)
            .ok_or_else(|| Fail::refused("recharge", format!("value {} + {amount} overflows", status.value)))?;
        let y = nonce()?;
        let offer = c.recharge_init(self.idc, &y, v_new).map_err(|e| card_fail("RECHARGE INIT", e))?;
        if offer.v_old.checked_add(amount) != Some(v_new) {
            return Err(Fail::refused("RECHARGE INIT", format!("card showed {} after reporting {}", offer.v_old, status.value)));
        }
        let mut checks = vec![Check {
            what: "SU(Y * X * V * V')",
            key: cert.key.clone(),
            msg: recharge_request_body(cert.id, self.idc, &y, &offer.x, offer.v_old, v_new),
            sig: offer.su.clone(),
        }];
        checks.extend(offer.provenance.checks(&master, cert.id, offer.v_old).map_err(|e| Fail::refused("provenance", e.0))?);
        verify_all_sw(&checks).map_err(|e| Fail::refused("recharge request", e))?;
        let v_old = offer.v_old;
        let req = RechargeRequest { cert: cert.clone(), idc: self.idc, y, offer, amount };
        let (signed_v, sa) = center.authorize_recharge(&req, now)?;
        debug_assert_eq!(signed_v, v_new);
        c.recharge_commit(&sa).map_err(|e| card_fail("RECHARGE COMMIT", e))?;
        Ok(Loaded { idu: cert.id, flow: "fig7", v_old, v_new })
    }
}
