"""make run keeps data in SQLite, which stores no UTC offset: times must still come back aware
and compare with utcnow() exactly as they do on PostgreSQL."""

import datetime as dt

from sqlalchemy import DateTime, Integer, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shared.db import make_engine

CST = dt.timezone(dt.timedelta(hours=8))


class Base(DeclarativeBase):
    pass


class Stamp(Base):
    __tablename__ = "stamps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


def test_sqlite_times_are_stored_in_utc_and_read_back_aware():
    engine = make_engine("sqlite:///:memory:")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Stamp(id=1, at=dt.datetime(2026, 1, 1, 8, 0, tzinfo=CST)))
        session.commit()
        stored = session.scalar(select(Stamp.at))
        assert stored is not None and stored.tzinfo is not None
        assert stored == dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC)
        # Compared in UTC, not as wall-clock text: 08:00+08:00 is before 00:30Z.
        assert session.scalar(select(Stamp.id).where(Stamp.at < dt.datetime(2026, 1, 1, 0, 30, tzinfo=dt.UTC))) == 1
        assert stored < dt.datetime.now(dt.UTC)
