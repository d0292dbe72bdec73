"""Payment aggregate: one charge, retries after a decline, bounded refunds."""

import pytest

from domain import (
    CommandRefused,
    IllegalTransition,
    Payment,
    PaymentCharged,
    RefundExceedsCharge,
)


def charged(amount: int = 1000) -> Payment:
    payment = Payment("o-1")
    payment.charge("p-1", amount)
    return payment


def test_charging_records_the_amount_for_the_order():
    payment = charged(1000)
    assert (payment.status, payment.charged_cents, payment.refunded_cents) == ("charged", 1000, 0)
    assert payment.pending == [PaymentCharged(payment_id="p-1", order_id="o-1", amount_cents=1000)]


def test_refuses_to_charge_twice():
    with pytest.raises(IllegalTransition, match="Payment o-1 is charged: cannot charge"):
        charged().charge("p-2", 1000)


@pytest.mark.parametrize("amount", [0, -5])
def test_refuses_to_charge_a_non_positive_amount(amount):
    with pytest.raises(CommandRefused, match="is new: cannot charge: amount_cents must be"):
        Payment("o-1").charge("p-1", amount)


def test_a_declined_payment_may_be_retried():
    payment = Payment("o-1")
    payment.decline("card expired")
    assert payment.status == "declined"
    payment.charge("p-2", 500)
    assert (payment.status, payment.payment_id) == ("charged", "p-2")


def test_refuses_to_decline_a_charged_payment():
    with pytest.raises(IllegalTransition, match="is charged: cannot decline"):
        charged().decline("too late")


def test_refunds_in_parts_up_to_the_charge():
    payment = charged(1000)
    payment.refund("p-1", 300, "damaged")
    assert (payment.status, payment.refunded_cents) == ("partially_refunded", 300)
    payment.refund("p-1", 700, "cancelled")
    assert (payment.status, payment.refunded_cents) == ("refunded", 1000)


def test_refuses_to_refund_more_than_was_charged():
    with pytest.raises(RefundExceedsCharge) as info:
        charged(1000).refund("p-1", 1001, "oops")
    error = info.value
    assert (error.requested_cents, error.refundable_cents) == (1001, 1000)
    assert (error.state, error.command) == ("charged", "refund")


def test_refuses_to_refund_more_than_what_remains_after_earlier_refunds():
    payment = charged(1000)
    payment.refund("p-1", 600, "partial")
    with pytest.raises(RefundExceedsCharge, match="exceeds the refundable 400 cents"):
        payment.refund("p-1", 401, "again")


def test_refuses_to_refund_a_fully_refunded_payment():
    payment = charged(1000)
    payment.refund("p-1", 1000, "cancelled")
    with pytest.raises(IllegalTransition, match="is refunded: cannot refund"):
        payment.refund("p-1", 1, "again")


def test_refuses_to_refund_before_any_charge():
    with pytest.raises(IllegalTransition, match="Payment o-1 is new: cannot refund"):
        Payment("o-1").refund("p-1", 1, "nothing charged")


def test_refuses_to_refund_another_payment():
    with pytest.raises(CommandRefused, match="payment p-9 is not the charge p-1"):
        charged().refund("p-9", 1, "wrong id")
