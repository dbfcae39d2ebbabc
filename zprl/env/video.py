"""Episode videos: the wrapper rollouts put between the env and its action chunking (zprl/env/wrappers.py)."""

from __future__ import annotations

import os

import gymnasium as gym


class VideoRecordingWrapper(gym.Wrapper):
    """Record the next episode(s) to ``video_path`` (set it before ``reset``; None = off).

    Frames come from the env's ``render()`` every ``render_every`` control steps, so a 20 Hz env
    filmed at fps=10 plays in real time. The file is finalized when the episode ends, on the next
    reset, on ``close_video()`` or on ``close()``. Without a path nothing is rendered.
    """

    def __init__(self, env: gym.Env, fps: int = 10, render_every: int | None = None, codec: str = "h264",
                 crf: int = 22):
        super().__init__(env)
        self.fps = fps
        control_freq = float(env.get_wrapper_attr("metadata").get("render_fps", fps))
        self.render_every = render_every or max(int(round(control_freq / fps)), 1)
        self.codec, self.crf = codec, crf
        self.video_path: str | None = None
        self._writer = None
        self._step = 0
        self.last_video: str | None = None

    def _open(self, path: str) -> None:
        import imageio

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._writer = imageio.get_writer(path, fps=self.fps, codec=self.codec, quality=None,
                                          ffmpeg_params=["-crf", str(self.crf)], macro_block_size=1)
        self._path = path

    def close_video(self) -> str | None:
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        self.last_video = self._path
        return self._path

    def _frame(self) -> None:
        if self._writer is not None and self._step % self.render_every == 0:
            self._writer.append_data(self.env.render())

    def reset(self, **kwargs):
        self.close_video()
        out = self.env.reset(**kwargs)
        self._step = 0
        if self.video_path:
            self._open(self.video_path)
            self._frame()
        return out

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._step += 1
        self._frame()
        if terminated or truncated:
            self.close_video()
        return obs, reward, terminated, truncated, info

    def close(self):
        self.close_video()
        super().close()
