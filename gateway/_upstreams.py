"""The gateway's side of the mesh: one gRPC channel per upstream target, reused by every call."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message

from clients import mesh_channel_args
from gateway._config import GatewayConfig
from gateway._routes import Route

__all__ = ["Upstreams"]


class Upstreams:
    """One channel per upstream target, reused by every call; multicallables cached."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.channels: dict[str, grpc.aio.Channel] = {}
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[Message, Message]] = {}
        self._stream: dict[str, grpc.aio.UnaryStreamMultiCallable[Message, Message]] = {}

    def channel(self, service: descriptor.ServiceDescriptor) -> grpc.aio.Channel:
        target = self.config.target(service)
        ch = self.channels.get(target)
        if ch is None:
            options = [
                *mesh_channel_args(),  # reconnects within 2 s of an upstream's restart
                # an error's details ride in the trailers: room for a long BadRequest
                ("grpc.max_metadata_size", 64 * 1024),
            ]
            credentials = self.config.tls.channel_credentials()
            if credentials is None:
                ch = grpc.aio.insecure_channel(target, options=options)
            else:
                ch = grpc.aio.secure_channel(target, credentials, options=options)
            self.channels[target] = ch
        return ch

    def unary(self, route: Route) -> grpc.aio.UnaryUnaryMultiCallable[Message, Message]:
        mc = self._unary.get(route.grpc_path)
        if mc is None:
            out = message_factory.GetMessageClass(route.rpc.output_type)
            mc = self.channel(route.service).unary_unary(
                route.grpc_path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=out.FromString,
            )
            self._unary[route.grpc_path] = mc
        return mc

    def stream(self, route: Route) -> grpc.aio.UnaryStreamMultiCallable[Message, Message]:
        mc = self._stream.get(route.grpc_path)
        if mc is None:
            out = message_factory.GetMessageClass(route.rpc.output_type)
            mc = self.channel(route.service).unary_stream(
                route.grpc_path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=out.FromString,
            )
            self._stream[route.grpc_path] = mc
        return mc

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()
        self.channels.clear()
        self._unary.clear()
        self._stream.clear()
