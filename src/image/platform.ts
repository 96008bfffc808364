// Platforms as "os/arch[/variant]" strings, normalised the way containerd does for the common cases.
// Used by the CLI (--custom-platform) and by the build (FROM --platform, the platform ARGs).
import type { Platform } from './types.js';

const archAliases: Record<string, string> = { x86_64: 'amd64', x64: 'amd64', aarch64: 'arm64', ia32: '386', i386: '386', armhf: 'arm', armel: 'arm' };

export class InvalidPlatformError extends Error {}

/** The platform kiln itself runs on: BuildKit's BUILDPLATFORM, and the default target. */
export function hostPlatform(): Platform {
  const architecture = archAliases[process.arch] ?? process.arch;
  return architecture === 'arm' ? { os: 'linux', architecture, variant: 'v7' } : { os: 'linux', architecture };
}

export function parsePlatform(text: string): Platform {
  const parts = text.toLowerCase().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9._-]+$/.test(p))) {
    throw new InvalidPlatformError(`invalid platform "${text}": use os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm/v7`);
  }
  const [os, arch, variant] = parts as [string, string, string | undefined];
  const architecture = archAliases[arch] ?? arch;
  return variant ? { os, architecture, variant } : { os, architecture };
}

export function platformString(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}
