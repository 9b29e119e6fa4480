"""Typed async client of the Pricing service (PricingService)."""

from __future__ import annotations

import grpc

from clients._base import BaseClient, ClientOptions, Metadata
from foodmesh.v1 import pricing_pb2 as pb
from foodmesh.v1 import pricing_pb2_grpc as pb_grpc

__all__ = ["PricingClient"]


class PricingClient(BaseClient):
    """foodmesh.v1.PricingService: deadlines on every call, retries where the contract allows."""

    SERVICE = pb.DESCRIPTOR.services_by_name["PricingService"]

    def __init__(
        self, target: str | grpc.aio.Channel, *, options: ClientOptions | None = None
    ) -> None:
        super().__init__(target, options=options)
        self.stub = pb_grpc.PricingServiceStub(self.channel)

    async def quote_order(
        self,
        request: pb.QuoteOrderRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.QuoteOrderResponse:
        """Prices an order: subtotal from the Catalog, fees, surge, tax, promo, total."""
        return await self.stub.QuoteOrder(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_surge(
        self,
        request: pb.GetSurgeRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetSurgeResponse:
        """The surge multiplier at a point now."""
        return await self.stub.GetSurge(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_surge_history(
        self,
        request: pb.GetSurgeHistoryRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetSurgeHistoryResponse:
        """Surge of a cell over time, for the dashboard."""
        return await self.stub.GetSurgeHistory(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def forecast_demand(
        self,
        request: pb.ForecastDemandRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ForecastDemandResponse:
        """Orders forecast per geohash-5 cell for the next half hour and the one after."""
        return await self.stub.ForecastDemand(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def import_demand_prior(
        self,
        request: pb.ImportDemandPriorRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ImportDemandPriorResponse:
        """Loads a synthetic demand history of a cell (the seed, at a city's launch)."""
        return await self.stub.ImportDemandPrior(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def set_conditions(
        self,
        request: pb.SetConditionsRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.SetConditionsResponse:
        """Sets the events and weather that move surge (ops and the simulator)."""
        return await self.stub.SetConditions(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def upsert_promo_code(
        self,
        request: pb.UpsertPromoCodeRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.UpsertPromoCodeResponse:
        """Creates or replaces a promo code (ops)."""
        return await self.stub.UpsertPromoCode(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def redeem_promo_code(
        self,
        request: pb.RedeemPromoCodeRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.RedeemPromoCodeResponse:
        """Counts one use of a promo code for an order, atomically (the Order service)."""
        return await self.stub.RedeemPromoCode(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def release_promo_code(
        self,
        request: pb.ReleasePromoCodeRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.ReleasePromoCodeResponse:
        """Gives back an order's use of a promo code (cancellation)."""
        return await self.stub.ReleasePromoCode(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )

    async def get_quote(
        self,
        request: pb.GetQuoteRequest,
        *,
        deadline_s: float | None = None,
        metadata: Metadata = (),
    ) -> pb.GetQuoteResponse:
        """Returns a quote by id while it is valid (PlaceOrder checks what it priced)."""
        return await self.stub.GetQuote(
            request, timeout=self._deadline(deadline_s), metadata=self._metadata(metadata)
        )
