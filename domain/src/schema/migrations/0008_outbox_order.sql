-- The notifier sends a transition only when no earlier transition of the
-- same alert to the same receiver is undelivered; this index answers that
-- question from the (few) undelivered rows, however long the history.
CREATE INDEX alert_notifications_pending_idx
    ON alert_notifications (alert_id, receiver, id)
    WHERE delivered_at IS NULL;
